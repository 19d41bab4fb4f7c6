"""Does moto's S3 apply conditional writes atomically? Races ``If-None-Match: *`` puts.

    .venv/bin/python benchmarks/journal/moto_race.py [--rounds 3000] [--writers 8] [--serialize]

Each round, ``--writers`` threads put one new key at the same moment; a round where more than one
put succeeds is a lost race (an atomic store lets exactly one through). moto 5.2 checks the
condition and writes in separate steps of a threaded request handler, so it loses some races
(rarely: 0 of 1,000 rounds with 8 writers and 5 of 3,000 with 16, idle 2-core machine,
2026-12-02; the odds move with the machine's load). That is why the journal tests run moto serialized (``tests.infra.moto_s3
--serialize``; ``--serialize`` here shows it then loses none). This is an observation of a third
party's behaviour, measured here rather than asserted in the suite, where its odds depend on
the machine's load. If a new moto loses no race in a few thousand rounds, the serializing
wrapper may go.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.infra.s3 import race_rounds, running_moto  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--serialize", action="store_true")
    args = parser.parse_args()
    import moto
    with running_moto(serialize=args.serialize) as store:
        store.serialized = True        # count every doubled round, do not stop at the first
        started = time.monotonic()
        rounds, doubled = race_rounds(store, args.rounds, args.writers, args.seconds)
    print(json.dumps({"moto": moto.__version__, "serialized": args.serialize, "rounds": rounds,
                      "writers": args.writers, "lost_races": doubled,
                      "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
