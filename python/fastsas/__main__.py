import sys

from fastsas.cli import main

sys.exit(main())
