from mkwfs.cli import main

raise SystemExit(main())
