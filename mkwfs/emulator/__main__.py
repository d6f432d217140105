"""python -m mkwfs.emulator: serve the emulator."""

from mkwfs.emulator.cli import main

raise SystemExit(main())
