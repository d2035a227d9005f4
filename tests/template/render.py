"""Turns template.yaml into the template CloudFormation would deploy, offline.

Two steps, the same two the service runs:
1. AWS::LanguageExtensions (Fn::ForEach unrolled, parameters resolved where they can be), with
   SAM CLI's port of the transform (it follows the service's implementation);
2. AWS::Serverless-2016-10-31 (AWS::Serverless::Function -> Lambda function, event source mapping,
   EventBridge rule ...), with aws-sam-translator, the library behind the SAM transform.

Runs on the SAM CLI's Python (`.venv/opt/sam/bin/python`, see mk/deploy.mk). The template tests
import it; `make template-check` also writes rendered scenarios for checkov, which cannot read
Fn::ForEach and would otherwise skip every per-destination resource.

    .venv/opt/sam/bin/python tests/template/render.py [--scenario NAME] [-p Key=Value ...] [--stage expanded|final]

A third stage, `deployable` (`make sam-template ENV=<samconfig environment>`), is what `sam build`
and `sam deploy` use: only the loops unrolled, for the environment's DestinationRegions, and
nothing else resolved. SAM CLI 1.170 builds functions inside Fn::ForEach but does not put their
uploaded code location back into the loop (aws/aws-sam-cli#9117): deployed as written, the drains
would reach CloudFormation with a local CodeUri. Unrolled, they are ordinary functions.

    .venv/opt/sam/bin/python tests/template/render.py --stage deployable --env us-east-1 -o target/deploy/us-east-1/template.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

from samcli.lib.cfn_language_extensions import PseudoParameterValues, ResolutionMode, process_template
from samcli.yamlhelper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ACCOUNT = "123456789012"
STACK = "ferry"

_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"

# Deployments the tests and checkov look at. Values are parameter overrides.
SCENARIOS: dict[str, dict[str, str]] = {
    # Existing table, two destinations, one with its own table name.
    "two-destinations": {
        "TableName": "orders",
        "TableStreamArn": _STREAM,
        "PartitionKey": "pk",
        "SortKey": "sk",
        "DestinationRegions": "eu-west-1,ap-southeast-2",
        "DestinationTableNames": "ap-southeast-2=orders-apac",
    },
    # The stack creates the table; every destination in another account; alarms to SNS; an
    # operator role.
    "cross-account-new-table": {
        "TableName": "orders",
        "CreateTable": "true",
        "PartitionKey": "pk",
        "PartitionKeyType": "S",
        "SortKey": "sk",
        "SortKeyType": "N",
        "DestinationRegions": "eu-west-1,ap-southeast-2",
        "DestinationRoleArns": "eu-west-1=arn:aws:iam::210987654321:role/ferry-writer,"
        "ap-southeast-2=arn:aws:iam::333333333333:role/ferry-writer",
        "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:ferry-alarms",
        "OperatorRoleArn": "arn:aws:iam::123456789012:role/ops/ferry-operator",
    },
    # A third region, no sort key, attribute merge, metrics in a namespace of their own.
    "three-destinations": {
        "TableName": "orders",
        "TableStreamArn": _STREAM,
        "PartitionKey": "pk",
        "MergeMode": "attribute",
        "DestinationRegions": "eu-west-1,ap-southeast-2,us-west-2",
        "MetricsNamespace": "Shop/Ferry",
    },
}


def load(template: Path = TEMPLATE) -> dict:
    """The template as a dict, short-form tags (!Ref ...) turned into their long forms."""
    return yaml_parse(Path(template).read_text())


def parameter_values(raw: dict, overrides: dict[str, str]) -> dict:
    values = {}
    for name, spec in raw.get("Parameters", {}).items():
        if name in overrides:
            value = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            continue
        if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
            value = value.split(",") if value != "" else []
        values[name] = value
    return values


def expand(overrides: dict[str, str], region: str = "us-east-1", template: Path = TEMPLATE) -> dict:
    """Step 1: the language extensions."""
    raw = load(template)
    pseudo = PseudoParameterValues(
        region=region, account_id=ACCOUNT, stack_name=STACK, partition="aws", url_suffix="amazonaws.com"
    )
    return process_template(
        raw,
        parameter_values=parameter_values(raw, overrides),
        pseudo_parameters=pseudo,
        resolution_mode=ResolutionMode.PARTIAL,
    )


def translate(expanded: dict, overrides: dict[str, str], region: str = "us-east-1") -> dict:
    """Step 2: the SAM transform. CodeUri becomes an S3 location, as `sam package` makes it."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:  # the template names no managed policies; never call IAM
        def load(self):
            return {}

    template = copy.deepcopy(expanded)
    template["Transform"] = "AWS::Serverless-2016-10-31"
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = "s3://ferry-artifacts/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    os.environ["AWS_REGION"] = region
    raw = load()
    values = parameter_values(raw, overrides)
    values = {k: (",".join(v) if isinstance(v, list) else v) for k, v in values.items()}
    return transform(template, values, NoManagedPolicies())


def final(overrides: dict[str, str], region: str = "us-east-1", template: Path = TEMPLATE) -> dict:
    return translate(expand(overrides, region, template), overrides, region)


# ----------------------------------------------------------------------------------------------
# deployable: Fn::ForEach unrolled the way the transform does it, nothing else touched
# ----------------------------------------------------------------------------------------------
_LE_ONLY = ("Fn::ToJsonString", "Fn::Length")


def _substitute(node, identifier: str, value: str):
    """${identifier} -> value and &{identifier} -> value without non-alphanumerics, in every
    string and key; {"Ref": identifier} -> value (the transform's rules)."""
    import re

    if isinstance(node, str):
        return node.replace("${" + identifier + "}", value).replace(
            "&{" + identifier + "}", re.sub("[^0-9A-Za-z]", "", value)
        )
    if isinstance(node, list):
        return [_substitute(v, identifier, value) for v in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] == identifier:
            return value
        return {_substitute(k, identifier, value): _substitute(v, identifier, value) for k, v in node.items()}
    return node


def _unroll(node, collections: dict[str, list[str]]):
    """Replaces every Fn::ForEach::<name> key of a mapping by its copies (recursively)."""
    if isinstance(node, list):
        return [_unroll(v, collections) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if isinstance(key, str) and key.startswith("Fn::ForEach::"):
            identifier, collection, body = value
            if isinstance(collection, dict) and set(collection) == {"Ref"}:
                items = collections[collection["Ref"]]
            elif isinstance(collection, list) and all(isinstance(c, str) for c in collection):
                items = collection
            else:
                raise ValueError(f"{key}: collection {collection!r} is neither a list nor a parameter")
            for item in items:
                for k, v in _unroll(_substitute(body, identifier, item), collections).items():
                    if k in out:
                        raise ValueError(f"{key}: {k} generated twice")
                    out[k] = v
        else:
            if key in out:
                raise ValueError(f"{key} generated twice")
            out[key] = _unroll(value, collections)
    return out


def _plain_subs(node):
    """{"Fn::Sub": "text"} without variables is the text: the transform leaves the name in
    `Ref: {Fn::Sub: Buffer&{Region}}` as a plain logical ID, and so does this."""
    if isinstance(node, list):
        return [_plain_subs(v) for v in node]
    if isinstance(node, dict):
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str) and "${" not in node["Fn::Sub"]:
            return node["Fn::Sub"]
        return {k: _plain_subs(v) for k, v in node.items()}
    return node


def environment_parameters(env: str, config_path: Path = ROOT / "samconfig.toml") -> dict[str, str]:
    import tomllib

    config = tomllib.loads(config_path.read_text())
    overrides = config[env]["global"]["parameters"]["parameter_overrides"]
    if isinstance(overrides, str):
        overrides = overrides.split()
    return dict(o.split("=", 1) for o in overrides)


def deployable(overrides: dict[str, str], output: Path, template: Path = TEMPLATE) -> dict:
    """The template with its loops unrolled for these parameter values, local code paths made
    relative to `output`'s folder (where `sam build -t` will look for them)."""
    raw = load(template)
    collections = {}
    for name, spec in raw.get("Parameters", {}).items():
        if spec.get("Type") == "CommaDelimitedList":
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                continue
            collections[name] = [v.strip() for v in value.split(",") if v.strip()]
    result = _plain_subs(_unroll(raw, collections))
    text = json.dumps(result)
    if not any(f in text for f in _LE_ONLY) and "DefaultValue" not in text:
        result["Transform"] = [t for t in listify(result["Transform"]) if t != "AWS::LanguageExtensions"]
        if len(result["Transform"]) == 1:
            result["Transform"] = result["Transform"][0]
    base = Path(template).resolve().parent
    rel = os.path.relpath(base, Path(output).resolve().parent)
    for resource in result["Resources"].values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            if not props["CodeUri"].startswith("s3://"):
                props["CodeUri"] = os.path.normpath(os.path.join(rel, props["CodeUri"]))
    result.setdefault("Metadata", {})["FerryRendered"] = (
        f"Generated from {Path(template).name} for DestinationRegions="
        f"{overrides.get('DestinationRegions', '')}; do not edit, re-run make sam-template."
    )
    return result


def listify(x):
    return x if isinstance(x, list) else [x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="two-destinations", choices=sorted(SCENARIOS))
    ap.add_argument("-p", "--param", action="append", default=[], help="Key=Value, on top of the scenario")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--template", default=str(TEMPLATE))
    ap.add_argument("--stage", choices=["expanded", "final", "deployable"], default="final")
    ap.add_argument("--env", help="deployable: the samconfig.toml environment whose parameters to use")
    ap.add_argument("-o", "--output", help="write here instead of stdout")
    args = ap.parse_args()
    overrides = environment_parameters(args.env) if args.env else dict(SCENARIOS[args.scenario])
    for p in args.param:
        k, _, v = p.partition("=")
        overrides[k] = v
    if args.stage == "deployable":
        if not args.output:
            ap.error("--stage deployable needs -o (code paths are made relative to it)")
        result = deployable(overrides, Path(args.output), Path(args.template))
    else:
        expanded = expand(overrides, args.region, Path(args.template))
        result = expanded if args.stage == "expanded" else translate(expanded, overrides, args.region)
    text = json.dumps(result, indent=1, default=str) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
