"""`outcrop models`: see the catalog and where each model's weights are, and the Bedrock ids aliased to them;
register your own."""

from __future__ import annotations

import argparse

from outcrop.platform.config import load_settings


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("models", help="the foundation-model catalog")
    models = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")

    listing = models.add_parser("list", parents=[common],
                                help="list models, whether their weights are here, and the Bedrock ids aliased to them")
    listing.set_defaults(func=_list)

    reg = models.add_parser("register", parents=[common],
                            help="add a Hugging Face model folder or a GGUF file to the catalog")
    reg.add_argument("name", help="a lowercase name (the id becomes local.NAME-v1:0) or a full model id")
    reg.add_argument("path", help="the model folder (with config.json) or .gguf file; it stays in place")
    reg.set_defaults(func=_register)

    unreg = models.add_parser("unregister", parents=[common], help="remove a registered model from the catalog")
    unreg.add_argument("model_id")
    unreg.set_defaults(func=_unregister)


def _catalog(args: argparse.Namespace):
    from outcrop.catalog.service import Catalog
    from outcrop.platform.database import Database
    from outcrop.profiles.aliases import model_aliases

    settings = load_settings(data_dir=args.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return Catalog(db, settings.region, model_aliases(settings.model_aliases))


def _list(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    models = catalog.all()
    _table(("MODEL ID", "PROVIDER", "OUTPUT", "WEIGHTS"),
           [(m.model_id, m.provider, ",".join(m.output_modalities), catalog.weights_status(m)) for m in models])
    # The second section: the Bedrock ids applications may name, and the local model that answers each
    # (also as system inference profiles: us.ID, eu.ID, ...). A target not in the catalog is flagged.
    known = {m.model_id for m in models}
    aliases = [(alias, target, "" if target in known else "NOT IN CATALOG")
               for alias, target in catalog.alias_table().items()]
    if aliases:
        print()
        _table(("ALIAS", "SERVED BY", ""), aliases)
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _register(args: argparse.Namespace) -> int:
    model = _catalog(args).register(args.name, args.path)
    print(model.model_id)
    return 0


def _unregister(args: argparse.Namespace) -> int:
    _catalog(args).unregister(args.model_id)
    return 0
