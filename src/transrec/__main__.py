import sys

from transrec.cli.main import main

sys.exit(main())
