# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's error base: every error the add-on raises for a user to act on derives from ``UserError``; its
message says what is wrong and how to fix it. Operators report these as one line; anything else is a bug."""


class UserError(Exception):
    """A message for the user (what is wrong and how to fix it)."""
