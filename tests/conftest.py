import sys
from pathlib import Path

# Test helpers (qrgen, mosquitto, pty_pair) are plain modules beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
