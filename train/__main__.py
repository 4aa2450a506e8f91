from digitpipe.train.cli import main

raise SystemExit(main())
