from mkwfs.cli.main import main

raise SystemExit(main())
