"""Make the pretraining corpus: synthetic (offline, deterministic) or tokenized shards.

Called by workflow/rules/data.smk in the pretraining environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from effbench.atomic import atomic_path
from effbench.runner import start_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="config data.pretrain (JSON)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    a = p.parse_args()
    start_job()
    s = json.loads(a.settings)
    # Build in a temporary folder and move it into place: a killed job leaves no half corpus.
    if a.out_dir.exists():
        shutil.rmtree(a.out_dir)
    with atomic_path(a.out_dir) as tmp:
        tmp.mkdir(parents=True)
        if s["source"] == "synthetic":
            from effbench.data.synthetic import make_pretraining_corpus

            syn = s["synthetic"]
            meta = make_pretraining_corpus(tmp, vocab_size=syn["vocab_size"], train_tokens=syn["train_tokens"],
                                           val_tokens=syn["val_tokens"], seed=a.seed)
        else:
            from effbench.data.shards import tokenize_text_shards

            sh = s["shards"]
            meta = tokenize_text_shards(Path(sh["path"]).expanduser(), text_field=sh.get("text_field", "text"),
                                        tokenizer=sh["tokenizer"], out_dir=tmp,
                                        val_fraction=sh.get("val_fraction", 0.001),
                                        max_train_tokens=sh.get("max_train_tokens"), seed=a.seed)
    logging.getLogger("effbench.data").info("corpus ready: %s", json.dumps(meta, default=str)[:2000])


if __name__ == "__main__":
    main()
