"""prepare_process: the serving process's interpreter tuning, checked in a fresh interpreter
(it changes process-wide state), and the benchmark floor tuned the same way."""

from __future__ import annotations

import json
import subprocess
import sys

from bench import floor
from cds_service import app

_PROBE = """
import gc, json, sys
from cds_service.app import prepare_process
before = gc.get_threshold()
prepare_process()
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval()]))
"""


def test_serving_process_is_tuned_and_the_floor_mirrors_it() -> None:
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    before, after, frozen, switch = json.loads(run.stdout.splitlines()[-1])
    assert after == [app.YOUNG_COLLECTION_THRESHOLD, *before[1:]]  # older generations untouched
    assert frozen > 0  # start-up objects out of the collector's sight
    assert switch == app.SWITCH_INTERVAL_S
    assert floor.YOUNG_COLLECTION_THRESHOLD == app.YOUNG_COLLECTION_THRESHOLD
