#!/usr/bin/env python3
"""Fits each focus strategy's detection settings on the GTSDB *validation* frames and writes strategies.toml.

The validation frames are the training frames whose number % 6 == 5 (`saccade eval --split validation`);
the test frames 00600-00899 are never read. For every strategy, a coordinate search over a small grid of
settings (one key at a time, a few rounds) maximises the validation F1 at the best score threshold that
`saccade eval` reports (`best_f1`, from its score sweep run with min_score 0.05); the threshold becomes the
strategy's `min_score`. Every evaluation is logged to a JSON-lines file.

    python3 tools/fit/fit_strategies.py --data ../shared/data --weights-dir models/weights \
        --out models/weights/strategies.toml --log models/weights/logs/fit_strategies.jsonl

Needs a release build (`cargo build --release`); it runs `target/release/saccade`. `--strategies a,b` fits only
those and keeps the other sections (and their summary lines) of an existing --out; `--from-existing` starts
each search from the settings already in --out (a refit after retraining a net), `--rounds N` sets the passes
over the grid. Python ≥ 3.11 (tomllib).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

# The grid: for each strategy, the keys searched and their candidate values (first value = starting point).
SHARED = {
    "context": [2.0, 1.6, 2.5],
    "min_patch_side_px": [28.0, 20.0, 36.0],
    "second_look_min": [0.1, 0.05, 0.2, 0.35],
    "second_look_context": [1.3, 1.2, 1.5],
    "nothing_threshold": [0.05, 0.02, 0.1],
}
GRIDS = {
    # nms_iou: how much two chosen patches may overlap (signs stacked on one post sit a patch apart).
    # k up to 48: overlapping looks at one place (other offsets and sizes) find small signs one patch misses;
    # min_objectness spends them only where the glance saw something.
    "topk": {"k": [16, 12, 8, 24, 32, 48], "nms_iou": [0.3, 0.5, 0.7], "min_objectness": [0.0, 0.02, 0.05],
             **SHARED},
    "coarse2fine": {
        "threshold": [0.3, 0.2, 0.45],
        "max_regions": [6, 8, 12],
        "max_windows_per_region": [2, 1, 3],
        **SHARED,
    },
    "zoom": {
        "max_windows": [8, 12, 16],
        # Windows follow the glance's size estimate × context (at least min_patch_side_px in frame px).
        "context": [2.0, 1.6, 2.5],
        "min_patch_side_px": [28.0, 20.0, 36.0],
        "warped_side_px": [448, 320, 576],
        "sigma_fraction": [0.25, 0.15, 0.1],
        "saliency_floor": [0.02, 0.005, 0.05],
        "second_look_min": [0.05, 0.1, 0.2],
        "second_look_context": [1.2, 1.3, 1.5],
        "nothing_threshold": [0.05, 0.02, 0.1],
    },
    "gfnet": {
        "max_steps": [5, 4, 3],
        # Exit thresholds (glance, then after each step): the lower, the earlier a frame stops.
        "eta": [[0.95, 0.9, 0.9, 0.9, 0.9, 0.9], [0.95, 0.8, 0.8, 0.8, 0.8, 0.8]],
        **SHARED,
    },
    # downsample takes no second look (it would stop being a shrunk-frame baseline): only its factor.
    "downsample": {"factor": [2.0, 1.5, 3.0]},
    # The baselines: fullres costs ~2 s a frame on 2 cores, so only its second-look gate is searched
    # (its threshold comes from the sweep like every strategy's).
    "fullres": {"second_look_min": [0.1, 0.2]},
    "glance-only": {"min_side_px": [12.0, 8.0, 16.0], "merge_iou": [0.3, 0.1, 0.5]},
}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def toml_text(sections):
    out = ""
    for name, keys in sections.items():
        out += f"[{name}]\n"
        for k, v in keys.items():
            out += f"{k} = {toml_value(v)}\n"
        out += "\n"
    return out


def write_toml(path, sections):
    with open(path, "w") as f:
        f.write(toml_text(sections))


def evaluate(args, strategy, settings, log):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as cfg:
        path = cfg.name
    out_json = path + ".json"
    write_toml(path, {strategy: {**settings, "min_score": 0.05}})
    cmd = [
        args.saccade, "eval",
        "--images", os.path.join(args.data, "gtsdb", "images"),
        "--annotations", os.path.join(args.data, "gtsdb", "annotations.csv"),
        "--split", "validation",
        "--strategy", strategy,
        "--max-patches", str(args.max_patches),
        "--strategy-config", path,
        "--json", out_json,
    ]
    if args.weights_dir:
        cmd += ["--weights-dir", args.weights_dir]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out_json) as f:
        report = json.load(f)
    os.unlink(path)
    os.unlink(out_json)
    best = report["best_f1"]
    row = {"strategy": strategy, "settings": settings, "best_f1": best,
           "looked_at_share": report.get("looked_at_share"),
           "patches_per_frame": report.get("patches_per_frame")}
    log.write(json.dumps(row) + "\n")
    log.flush()
    print(f"{strategy} {settings} -> F1 {best['f1']:.3f} (P {best['precision']:.3f} R {best['recall']:.3f} "
          f"at {best['threshold']:.2f})", file=sys.stderr)
    return best


def fit(args, strategy, log, start=None):
    grid = GRIDS[strategy]
    settings = {k: vals[0] for k, vals in grid.items()}
    if start:
        settings.update({k: v for k, v in start.items() if k in grid})
    best = evaluate(args, strategy, settings, log)
    for _ in range(args.rounds):
        improved = False
        for key, values in grid.items():
            for v in values:
                if v == settings[key]:
                    continue
                trial = {**settings, key: v}
                result = evaluate(args, strategy, trial, log)
                if result["f1"] > best["f1"] + 1e-9:
                    settings, best, improved = trial, result, True
        if not improved:
            break
    return {**settings, "min_score": round(best["threshold"], 2)}, best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--out", default="models/weights/strategies.toml")
    p.add_argument("--log", default="models/weights/logs/fit_strategies.jsonl")
    p.add_argument("--saccade", default="target/release/saccade")
    p.add_argument("--max-patches", type=int, default=48)  # saccade's default per-frame budget
    p.add_argument("--strategies", default="topk,coarse2fine,zoom,gfnet,downsample,fullres,glance-only")
    p.add_argument("--rounds", type=int, default=2, help="passes over the grid's keys (stops early when none helps)")
    p.add_argument("--from-existing", action="store_true",
                   help="start each search from the settings in --out instead of each grid's first values "
                        "(a refit after retraining a net)")
    args = p.parse_args()
    # Sections of an existing --out that this run does not fit are kept, with their summary lines.
    sections, summary = {}, {}
    if os.path.exists(args.out):
        with open(args.out, "rb") as f:
            sections = tomllib.load(f)
        with open(args.out) as f:
            for line in f:
                if line.startswith("#   ") and ":" in line:
                    name, rest = line[4:].split(":", 1)
                    summary[name] = rest.strip()
    with open(args.log, "a") as log:
        for strategy in args.strategies.split(","):
            start = sections.get(strategy) if args.from_existing else None
            sections[strategy], b = fit(args, strategy, log, start)
            summary[strategy] = f"{b['f1']:.3f} ({b['precision']:.3f}, {b['recall']:.3f})"
    header = (
        "# Detection settings fitted on the GTSDB validation frames (training frames with number % 6 == 5) by\n"
        "# tools/fit/fit_strategies.py: coordinate search for the best validation F1; min_score = the best\n"
        "# threshold of eval's score sweep. Validation F1 (precision, recall) per strategy:\n"
    )
    for s, b in summary.items():
        header += f"#   {s}: {b}\n"
    with open(args.out, "w") as f:
        f.write(header + "\n" + toml_text(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
