"""``python -m tests.train_many '[ARGV, ...]'``: `training.train.main` once per argument list, in order, in this
process. Under torchrun, several 2-process runs then share one start-up of the processes and their process group."""

from __future__ import annotations

import json
import sys

from training.data import close_process_group
from training.train import main

if __name__ == "__main__":
    for argv in json.loads(sys.argv[1]):
        main(argv)
    close_process_group()
