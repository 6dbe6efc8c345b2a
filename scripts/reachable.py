"""Exit 0 when URL answers (with any HTTP status), 1 when it cannot be reached in 10 s.

python scripts/reachable.py https://download.pytorch.org/whl/cpu/
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # a server answered
    except (OSError, ValueError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(0 if reachable(sys.argv[1]) else 1)
