import sys

from flaxtune.cli import main

sys.exit(main())
