"""`python -m comfyui_persona.headless` is the same as the `persona` command."""

import sys

from .cli import main

sys.exit(main())
