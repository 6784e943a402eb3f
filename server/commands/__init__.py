"""One module per `python -m server <command>`: its arguments (``add_arguments``) and a ``run(args)`` that calls the
libraries. The only package that parses command lines; ``cli.py`` is the dispatcher."""
