import sys

from dianjing.cli import main

sys.exit(main())
