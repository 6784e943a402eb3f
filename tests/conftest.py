"""Session-wide test setup: Blender (bpy) keeps its user files (preferences, extensions) in a throw-away folder, so
tests never read or change the user's own Blender setup. Set before any test module imports bpy."""

import os
import tempfile

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="nh-blender-user-"))
