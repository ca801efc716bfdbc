from xiangyun.cli import main

raise SystemExit(main())
