"""Read and check a dataset in the ZJU-MoCap layout (real ZJU-MoCap sequences or the project's synthetic ones).

Prints the dataset summary as JSON and lists every missing or corrupt file; exit status 1 when something is
wrong. The layout: annots.npy (cameras, image list), images, mask_cihp/ masks, params/{i}.npy, vertices/{i}.npy,
and for synthetic datasets dataset.json and faces.npy.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (holds annots.npy)")
    parser.add_argument("--deep", action="store_true", help="also open every file (slow: reads the whole dataset)")
    parser.add_argument("--ratio", type=float, default=None, help="image scale (default: 0.5 real ZJU, dataset.json)")
    parser.add_argument("--train-views", type=int, nargs="+", default=None, help="training camera indices")
    parser.add_argument("--begin-frame", type=int, default=None, help="first training frame index")
    parser.add_argument("--num-train-frames", type=int, default=None, help="number of training frames")


def run(args: argparse.Namespace) -> int:
    from server.data.zju_reader import DatasetError, ZjuMocapDataset

    try:
        dataset = ZjuMocapDataset(args.root, ratio=args.ratio, train_views=args.train_views,
                                  begin_frame=args.begin_frame, num_train_frames=args.num_train_frames)
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    print(json.dumps(dataset.summary(), indent=2))
    problems = dataset.validate(deep=args.deep)
    for line in problems[:200]:
        print(line)
    if len(problems) > 200:
        print(f"... and {len(problems) - 200} more")
    print(f"{len(problems)} problem(s)" if problems else "dataset complete")
    return 1 if problems else 0
