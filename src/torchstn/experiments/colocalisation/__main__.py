"""``python -m torchstn.experiments.colocalisation [options]``: the same as ``torchstn reproduce colocalisation``."""

from torchstn.experiments.colocalisation.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
