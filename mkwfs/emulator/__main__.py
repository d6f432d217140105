"""python -m mkwfs.emulator: serve the emulator."""

from mkwfs.emulator import main

raise SystemExit(main())
