"""``python -m predictor.retrain --steps PATH [--out MODEL_DIR] [--publish [--address ADDR]]``

The retraining job (also ``ray job submit -- python -m predictor.retrain --steps PATH --publish``):
trains the latency model on a step trace (same split and settings as ``predictor.train``), then

  --out MODEL_DIR   writes it as a model directory (atomically; version = previous + 1), and/or
  --publish         submits it to the cluster's predictor actor with the job's held-out steps:
                    the actor's validation gate judges it on its held-out set plus those
                    steps, publishes it only if it passes, and keeps the job's held-out steps
                    only then. The actor must exist (the application's replicas create it,
                    bound to the model and hardware they serve); ``--create-actor`` creates
                    it when missing, bound to the steps' own (a predictor without a
                    deployment). A job run before the deployment therefore cannot bind the
                    actor to the wrong hardware and lock its replicas' samples out.

The steps must all come from one served model and hardware (provenance engine, model,
hardware), the ones the actor serves: steps or a model measured elsewhere (a CPU profile
submitted to a GPU deployment) are refused, and replicas refuse such a model too.

Prints the training metrics and the gate's decision as JSON; exits 1 when the actor refused
the job's provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from predictor.actor import ACTOR_NAME, NAMESPACE, get_or_create_actor
from predictor.bundle import read_version, save_bundle
from predictor.provenance import ProvenanceMismatchError, trace_provenance
from predictor.steptrace import AGGREGATIONS, StepTrace
from predictor.train import load_steps, report
from predictor.training import TrainConfig, split_indices, train_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m predictor.retrain", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("--steps", required=True, type=Path, action="append", help="step trace(s)")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default="min")
    p.add_argument("--out", type=Path, default=None, help="also write a model directory here")
    p.add_argument("--publish", action="store_true", help="submit to the predictor actor")
    p.add_argument("--force", action="store_true", help="publish without the validation gate")
    p.add_argument("--create-actor", action="store_true",
                   help="create the predictor actor if missing (bound to the steps' provenance)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or auto)")
    p.add_argument("--actor-name", default=ACTOR_NAME)
    p.add_argument("--namespace", default=NAMESPACE)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.out is None and not args.publish:
        p.error("nothing to do: give --out MODEL_DIR and/or --publish")
    return args


class NoActorError(RuntimeError):
    """``--publish`` found no predictor actor and was not asked to create one."""


def publish(args: argparse.Namespace, blob: bytes, holdout: StepTrace) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=args.address or "auto",
            namespace=args.namespace,
            include_dashboard=False,
            log_to_driver=False,
        )
    if args.create_actor:
        actor = get_or_create_actor(name=args.actor_name, namespace=args.namespace,
                                    served=trace_provenance(holdout))
    else:
        try:
            actor = ray.get_actor(args.actor_name, namespace=args.namespace)
        except ValueError:
            raise NoActorError(
                f"no predictor actor {args.actor_name!r} in namespace {args.namespace!r} on "
                f"this cluster: deploy the application first (its replicas create it, bound "
                f"to the model and hardware they serve), or pass --create-actor") from None
    result = ray.get(actor.submit.remote(blob, args.force, holdout))
    return result.to_dict()  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = TrainConfig(seed=args.seed)
        trace = load_steps(args.steps, args.aggregate)
        trace_provenance(trace)  # one served model and hardware (ProvenanceMismatchError)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    version = (read_version(args.out) or 0) + 1 if args.out is not None else 1
    bundle = train_model(trace, config, version)
    bundle.metrics["aggregate"] = args.aggregate
    print(report(bundle))
    out: dict[str, Any] = {"mape": bundle.metrics["mape"], "p90_ape": bundle.metrics["p90_ape"]}
    if args.out is not None:
        save_bundle(bundle, args.out)
        out["out"], out["version"] = str(args.out), version
    if args.publish:
        _, test_idx = split_indices(len(trace), config.test_fraction, config.seed)
        try:
            out["gate"] = publish(args, bundle.to_bytes(), trace.subset(test_idx))
        except NoActorError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except ProvenanceMismatchError as e:  # raised in the actor; Ray re-raises it as such
            out["error"] = str(getattr(e, "cause", None) or e)
            print(json.dumps(out))
            print(f"error: {out['error']}", file=sys.stderr)
            return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
