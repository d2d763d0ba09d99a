import sys

from sinklens.cli import main

sys.exit(main())
