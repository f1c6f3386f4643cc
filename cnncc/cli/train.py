"""``cnncc train MODEL --dataset digits``: compile the model's training step, train it, report and plot.

Each epoch shuffles the training split (full batches: the compiled step has one batch size), runs the compiled
step on every batch with a progress bar, then evaluates the held-out split with the inference compiler. Per epoch:
training loss and accuracy (from the step's own logits), test loss and accuracy, seconds. Writes to ``--out``:
``train-MODEL.json`` (the history and the run's settings), ``train-MODEL.png`` (loss and accuracy curves) and
``MODEL-trained.npz`` (the weights, loadable with ``model.load_weights``). A fixed ``--seed`` gives the same
initial weights, the same batches and, since every compiled kernel splits its work the same way whatever the
thread count, the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from cnncc.cli.common import Subparsers, add_model
from cnncc.errors import CnnccError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 1e-3, "adam": 2e-3}
SCHEDULES = ("constant", "step", "exponential", "inverse_time")
DATASETS = ("digits",)


def make_optimizer(name: str, lr: float | None, weight_decay: float) -> Any:
    from cnncc.optim import SGD, Adagrad, Adam, RMSprop

    if name not in OPTIMIZERS:
        raise CnnccError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")
    rate = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return SGD(rate, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return SGD(rate, momentum=0.9, nesterov=name == "nesterov", weight_decay=weight_decay)
    if name == "adagrad":
        return Adagrad(rate, weight_decay=weight_decay)
    if name == "rmsprop":
        return RMSprop(rate, weight_decay=weight_decay)
    return Adam(rate, weight_decay=weight_decay)


def make_schedule(name: str, lr0: float, step_size: int, gamma: float, k: float) -> Any:
    from cnncc.optim import Constant, Exponential, InverseTime, Step

    if name == "constant":
        return Constant(lr0)
    if name == "step":
        return Step(lr0, step_size, gamma)
    if name == "exponential":
        return Exponential(lr0, k)
    if name == "inverse_time":
        return InverseTime(lr0, k)
    raise CnnccError(f"unknown schedule '{name}'; choose one of {', '.join(SCHEDULES)}")


def load_dataset(name: str, input_shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    from cnncc.datasets import digits

    if name not in DATASETS:
        raise CnnccError(f"unknown dataset '{name}'; available: {', '.join(DATASETS)}")
    if len(input_shape) != 4 or input_shape[1] != 1 or input_shape[2] != input_shape[3] or \
            input_shape[2] not in (28, 32):
        raise CnnccError(f"dataset 'digits' holds 1x32x32 or 1x28x28 grey images; the model takes "
                         f"{tuple(input_shape[1:])}")
    size = input_shape[2]
    return (*digits("train", size, seed=0), *digits("test", size, seed=0))


def plot(history: list[dict[str, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax2.plot(epochs, [100 * h["test_acc"] for h in history], "s-", label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cnncc.loader import load_model
    from cnncc.training import batches, compile_training

    console = Console()
    if args.epochs < 1 or args.batch < 1:
        raise CnnccError(f"--epochs and --batch must be at least 1, got {args.epochs} and {args.batch}")
    t_start = time.perf_counter()
    model = load_model(args.model, seed=args.seed)
    graph = model.graph(1)
    x_train, y_train, x_test, y_test = load_dataset(args.dataset, graph.inputs[0].shape, args.seed)
    if args.batch > len(x_train):
        raise CnnccError(f"--batch {args.batch} is larger than the training split ({len(x_train)} examples)")
    optimizer = make_optimizer(args.optimizer, args.lr, args.weight_decay)
    schedule = make_schedule(args.schedule, optimizer.lr, args.lr_step, args.lr_gamma, args.lr_k)
    trainer = compile_training(model, loss="cross_entropy", optimizer=optimizer, batch=args.batch,
                               threads=args.threads, recompute=args.recompute)
    s = trainer.stats
    console.print(f"[bold]{model.name}[/]: training step compiled in {s.compile_s:.1f} s -- batch {args.batch}, "
                  f"{type(optimizer).__name__} ({args.optimizer}, lr {optimizer.lr:g}), saved activations "
                  f"{s.saved_activation_bytes / 1e6:.2f} MB, arena {s.arena_bytes / 1e6:.2f} MB "
                  f"(lower bound {s.arena_lower_bound / 1e6:.2f} MB), state {s.state_bytes / 1e6:.2f} MB")
    console.print(f"dataset {args.dataset}: {len(x_train)} training / {len(x_test)} test images "
                  f"{tuple(x_train.shape[1:])}")
    rng = np.random.default_rng(args.seed)
    history: list[dict[str, float]] = []
    steps = len(x_train) // args.batch
    columns = (TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=args.quiet) as progress:
        for epoch in range(1, args.epochs + 1):
            trainer.lr = schedule.lr(epoch - 1)
            task = progress.add_task("train", total=steps, epoch=epoch, loss=float("nan"))
            t0 = time.perf_counter()
            losses, correct, seen = [], 0, 0
            for idx in batches(len(x_train), args.batch, rng):
                loss, logits = trainer.step_logits(x_train[idx], y_train[idx])
                losses.append(loss)
                correct += int((logits.argmax(axis=1) == y_train[idx]).sum())
                seen += len(idx)
                progress.update(task, advance=1, loss=loss)
            t_train = time.perf_counter() - t0
            test_loss, test_acc = trainer.evaluate(x_test, y_test)
            progress.remove_task(task)
            row = {"epoch": epoch, "lr": trainer.lr, "train_loss": float(np.mean(losses)),
                   "train_acc": correct / seen, "test_loss": test_loss, "test_acc": test_acc,
                   "train_s": t_train, "elapsed_s": time.perf_counter() - t_start}
            history.append(row)
            console.print(f"epoch {epoch:3d}  lr {trainer.lr:.2e}  train loss {row['train_loss']:.4f}  "
                          f"acc {100 * row['train_acc']:6.2f}%  |  test loss {test_loss:.4f}  "
                          f"acc {100 * test_acc:6.2f}%  |  {t_train:.2f} s")
    total = time.perf_counter() - t_start
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"train-{model.name}")
    trainer.export(os.path.join(args.out, f"{model.name}-trained.npz"))
    record = {"model": model.name, "dataset": args.dataset, "epochs": args.epochs, "batch": args.batch,
              "optimizer": args.optimizer, "lr": optimizer.lr, "schedule": args.schedule, "seed": args.seed,
              "threads": args.threads, "compile_s": s.compile_s, "total_s": total,
              "saved_activation_bytes": s.saved_activation_bytes, "arena_bytes": s.arena_bytes,
              "arena_lower_bound": s.arena_lower_bound, "history": history}
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=1)
    plot(history, stem + ".png", f"{model.name} on {args.dataset} ({args.optimizer}, batch {args.batch})")
    final = history[-1]
    console.print(f"[bold]test accuracy {100 * final['test_acc']:.2f}%[/] after {args.epochs} epochs; "
                  f"{total:.1f} s in all (compile included). Wrote {stem}.json, {stem}.png, "
                  f"{os.path.join(args.out, model.name + '-trained.npz')}")
    return 0


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "train", help="train a model on a built-in dataset with its compiled training step",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_model(p)
    p.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits: scikit-learn's 1,797 handwritten 8x8 scans, enlarged, fixed 80/20 split")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training split (default 8)")
    p.add_argument("--batch", type=int, default=32, help="batch size of the compiled step (default 32)")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="default adam")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default per optimizer: "
                   + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay added to the gradient")
    p.add_argument("--schedule", default="constant", choices=SCHEDULES, help="learning rate per epoch")
    p.add_argument("--lr-step", type=int, default=5, help="step schedule: epochs per decay (default 5)")
    p.add_argument("--lr-gamma", type=float, default=0.5, help="step schedule: decay factor (default 0.5)")
    p.add_argument("--lr-k", type=float, default=0.1, help="exponential / inverse_time schedule: k (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and shuffling (default 0)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute cheap activations in the backward pass instead of saving them")
    p.add_argument("--out", default=".", metavar="DIR", help="where the JSON, PNG and weights go (default .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


__all__ = ["OPTIMIZERS", "add_parser", "make_optimizer", "make_schedule", "run"]
