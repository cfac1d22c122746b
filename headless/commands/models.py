"""`persona models check [--dir DIR]`: which weight files are present, missing, and whether they fit.

Weights are never downloaded; this tells a user exactly what to put where. Layout checks
open each present file with mmap (shapes only), so checking a 5 GB file takes seconds.
"""

from __future__ import annotations

import argparse

HELP = "List the model files the engine needs: present, missing (with where to get them), layout."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="check the models directory")
    check.add_argument("--dir", help="models directory (default: $PERSONA_MODELS_DIR or ~/.cache/comfyui-persona/models)")
    check.add_argument("--no-layout", action="store_true", help="only look for the files, do not open them")


def run(args: argparse.Namespace) -> int:
    from ...video import model_files

    directory = model_files.models_dir(args.dir)
    statuses = model_files.check(directory, layouts=not args.no_layout)
    print(f"models directory: {directory}")
    present = {st.spec.key for st in statuses if st.present}
    # Two files that replace each other (`instead_of`): either one is enough.
    partners = {k: v for spec in model_files.FILES.values() if spec.instead_of
                for k, v in ((spec.key, spec.instead_of), (spec.instead_of, spec.key))}
    bad = unneeded = 0
    for st in statuses:
        spec = st.spec
        if not st.present and partners.get(spec.key) in present:
            unneeded += 1
            other = model_files.FILES[partners[spec.key]].filename
            print(f"  --       {spec.filename}  (not needed: {other} is there; {spec.purpose})")
            continue
        if not st.present:
            bad += 1
            print(f"  MISSING  {spec.filename}  ({spec.purpose}; {spec.size_text})")
            print(f"           get it from {spec.source}")
            continue
        size = f"{st.size_bytes / 2**30:.2f} GiB"
        if st.problems:
            bad += 1
            print(f"  BAD      {st.path}  ({size}): layout does not fit")
            for problem in st.problems:
                print(f"           - {problem}")
        else:
            layout = "layout not checked" if args.no_layout or not spec.checker else "layout ok"
            print(f"  OK       {st.path}  ({size}, {layout})")
    needed = len(statuses) - unneeded
    print(f"{needed - bad} of {needed} files ready" + (f" ({unneeded} alternative not needed)" if unneeded else ""))
    return 0 if bad == 0 else 1
