from server.commands.cli import main

raise SystemExit(main())
