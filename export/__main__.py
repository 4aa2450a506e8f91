from digitpipe.export.cli import main

raise SystemExit(main())
