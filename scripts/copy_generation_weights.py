"""Copy a trained model's generation weights (no discriminator, no optimiser state) into
a fresh checkpoint directory: ``python scripts/copy_generation_weights.py SRC DEST``."""

import shutil
import sys
from pathlib import Path

from caloforge.pipelines import load_generator


def main(src: str, dest: str) -> None:
    model = load_generator(src)
    tmp = Path(dest).with_name(Path(dest).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"copied {model} to {dest}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
