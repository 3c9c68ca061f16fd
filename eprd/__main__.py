from eprd.cli import main

raise SystemExit(main())
