"""Assertions on template.yaml that cfn-lint and checkov do not make.

cfn-lint does not check enum values inside SAM resources (a misspelt ReportBatchItemFailures or a
bogus StartingPosition passes it) and checkov cannot read Fn::ForEach. So these tests look at the
template three ways: as written, after the language extensions (one copy per destination), and
after the SAM transform (the Lambda event source mapping, functions and rules CloudFormation will
really create) for several deployments (render.SCENARIOS).

Run with the SAM CLI's Python: `make template-check`, or
`.venv/opt/sam/bin/python -m pytest tests/template -q`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import render  # noqa: E402

ROOT = render.ROOT
FOURTEEN_DAYS = 14 * 24 * 3600
VALID_STARTING_POSITIONS = {"TRIM_HORIZON", "LATEST"}  # AT_TIMESTAMP is not for DynamoDB streams

SHARED_ENV = {
    "FERRY_LOCAL_REGION", "FERRY_PARTITION_KEY", "FERRY_SORT_KEY", "FERRY_DESTINATIONS",
    "FERRY_ATTR_TS", "FERRY_ATTR_ORIGIN", "FERRY_ATTR_TOMBSTONE", "FERRY_ATTR_TTL",
    "FERRY_TOMBSTONE_LIFETIME_S", "FERRY_DRAIN_LAG_ALLOWANCE_S", "FERRY_FILTER", "FERRY_MERGE_MODE",
    "RUST_LOG", "FERRY_METRICS_NAMESPACE",
}
ENQUEUE_ENV = SHARED_ENV | {"FERRY_TABLE", "FERRY_BUFFERS"}
DRAIN_ENV = SHARED_ENV | {
    "FERRY_SOURCE_REGION", "FERRY_BUFFER_URL", "FERRY_DLQ_URL", "FERRY_DESTINATION_REGION",
    "FERRY_DESTINATION_TABLE", "FERRY_DRAIN_BUDGET_S", "FERRY_MAX_IN_FLIGHT",
    "FERRY_MAX_DRAIN_CONCURRENCY", "FERRY_BUFFER_MAX_RECEIVE_COUNT", "FERRY_TABLE",
    "FERRY_MAX_WCU", "FERRY_DRAIN_SCHEDULE",
}  # + FERRY_DESTINATION_ROLE_ARN when cross-account
# The drain's conflict log (issue #19): the destination's table, the retention.
CONFLICT_ENV = {"FERRY_CONFLICT_TABLE", "FERRY_CONFLICT_RETENTION_DAYS"}


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def raw():
    return render.load()


@pytest.fixture(scope="session", params=sorted(render.SCENARIOS))
def scenario(request):
    name = request.param
    overrides = render.SCENARIOS[name]
    expanded = render.expand(overrides)
    final = render.translate(expanded, overrides)
    return {"name": name, "overrides": overrides, "expanded": expanded, "final": final}


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == kind}


def destinations(scenario):
    return scenario["overrides"]["DestinationRegions"].split(",")


def table(scenario):
    return scenario["overrides"]["TableName"]


def namespace(scenario):
    return scenario["overrides"].get("MetricsNamespace", "Ferry")


def strip(region):
    return re.sub("[^0-9A-Za-z]", "", region)


def resolve_param(raw, value, overrides=None):
    """The value of a {"Ref": Parameter} (its default, or the scenario's override)."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in raw["Parameters"]:
        name = value["Ref"]
        if overrides and name in overrides:
            return overrides[name]
        return raw["Parameters"][name].get("Default")
    return value


def as_int(raw, value, overrides=None):
    return int(resolve_param(raw, value, overrides))


def reserved(raw, value, overrides=None):
    """A {"Fn::Select": [{"Ref": Parameter}, list]} resolved, as CloudFormation would (the
    language extensions have done it already when the parameter has a value)."""
    if not isinstance(value, dict):
        return int(value)
    index, values = value["Fn::Select"]
    return int(values[as_int(raw, index, overrides)])


def statements(role):
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def listify(x):
    return x if isinstance(x, list) else [x]


# --------------------------------------------------------------------------------------------
# the template as written
# --------------------------------------------------------------------------------------------
def test_language_extensions_run_before_sam(raw):
    assert raw["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]


def test_destinations_are_one_loop_not_copies(raw):
    loops = [k for k in raw["Resources"] if k.startswith("Fn::ForEach::")]
    assert loops == ["Fn::ForEach::Destinations"]
    loop = raw["Resources"]["Fn::ForEach::Destinations"]
    assert loop[1] == {"Ref": "DestinationRegions"}
    kinds = sorted(v["Type"] for v in loop[2].values())
    assert kinds.count("AWS::SQS::Queue") == 2  # buffer + DLQ
    assert "AWS::Serverless::Function" in kinds
    assert raw["Parameters"]["DestinationRegions"]["Type"] == "CommaDelimitedList"


def test_starting_position_parameter_is_valid_and_explicit(raw):
    p = raw["Parameters"]["StreamStartingPosition"]
    assert set(p["AllowedValues"]) <= VALID_STARTING_POSITIONS
    assert p["Default"] in VALID_STARTING_POSITIONS


def test_retry_bounds_cannot_mean_forever(raw):
    # -1 (the event source mapping default) retries until the record expires after 24 h.
    retries = raw["Parameters"]["StreamMaxRetryAttempts"]
    age = raw["Parameters"]["StreamMaxRecordAgeSeconds"]
    assert retries["MinValue"] >= 0 and retries["MaxValue"] <= 10000
    assert age["MinValue"] >= 60 and age["MaxValue"] <= 604800
    assert age["Default"] < 24 * 3600, "give up before the stream itself drops the record"


def test_tombstones_outlive_every_record(raw):
    lifetime = raw["Parameters"]["TombstoneLifetimeSeconds"]
    allowance = raw["Parameters"]["DrainLagAllowanceSeconds"]
    assert lifetime["MinValue"] >= FOURTEEN_DAYS + allowance["MaxValue"]
    assert lifetime["Default"] >= FOURTEEN_DAYS + allowance["Default"]


def test_drain_defaults_fit_the_schedule(raw):
    p = raw["Parameters"]
    assert p["DrainSchedule"]["Default"] == "rate(1 minute)"
    budget, timeout = p["DrainBudgetSeconds"]["Default"], p["DrainTimeoutSeconds"]["Default"]
    # Each tick outlives the one-minute period by more than a receive's long poll takes to
    # start, so the buffer is never left untended between ticks; the timeout covers the budget.
    assert 60 + 5 <= budget < timeout <= 900


def test_globals_carry_exactly_the_shared_settings(raw):
    env = raw["Globals"]["Function"]["Environment"]["Variables"]
    assert set(env) == SHARED_ENV
    assert raw["Globals"]["Function"]["Architectures"] == ["arm64"]


def test_checkov_skips_are_inline_with_reasons(raw):
    text = (ROOT / "template.yaml").read_text()
    skips = re.findall(r"- id: (CKV\w+)\n\s+comment: (.+)", text)
    assert skips, "expected the inline skips"
    assert all(len(reason) > 30 for _, reason in skips)
    assert text.count("- id: CKV") == len(skips), "every skip needs a comment"


# --------------------------------------------------------------------------------------------
# what CloudFormation will create, per scenario
# --------------------------------------------------------------------------------------------
def test_stream_event_source(raw, scenario):
    mappings = of_type(scenario["final"], "AWS::Lambda::EventSourceMapping")
    assert list(mappings) == ["EnqueueFunctionStream"]
    p = mappings["EnqueueFunctionStream"]["Properties"]
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["StartingPosition"] in VALID_STARTING_POSITIONS
    assert p["StartingPosition"] == "TRIM_HORIZON"
    assert 1 <= p["BatchSize"] <= 10000
    assert "MaximumBatchingWindowInSeconds" in p
    assert 0 <= p["MaximumRetryAttempts"] <= 10000, "retries must be explicit and finite"
    assert 60 <= p["MaximumRecordAgeInSeconds"] <= 604800, "record age must be explicit and finite"
    assert isinstance(p["BisectBatchOnFunctionError"], bool)
    assert p["ParallelizationFactor"] == 1
    assert p["Enabled"] is True
    target = p["DestinationConfig"]["OnFailure"]["Destination"]
    assert target == {"Fn::GetAtt": ["EnqueueFailures", "Arn"]}
    assert scenario["final"]["Resources"]["EnqueueFailures"]["Type"] == "AWS::SQS::Queue"
    if scenario["overrides"].get("CreateTable") == "true":
        assert p["EventSourceArn"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    else:
        assert p["EventSourceArn"] == scenario["overrides"]["TableStreamArn"]


def test_created_table_has_stream_and_ttl(raw, scenario):
    table = scenario["final"]["Resources"]["Table"]
    assert table["Condition"] == "CreateTableCondition"
    assert table["DeletionPolicy"] == "Retain"
    if scenario["overrides"].get("CreateTable") != "true":
        return  # not created in this deployment
    p = table["Properties"]
    assert p["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert p["TimeToLiveSpecification"]["Enabled"] is True
    assert p["TimeToLiveSpecification"]["AttributeName"] == scenario["overrides"].get("AttrTtl", "ttl")
    keys = p["KeySchema"]
    assert keys[0] == {"AttributeName": "pk", "KeyType": "HASH"}
    if scenario["overrides"].get("SortKey"):
        assert keys[1] == {"AttributeName": scenario["overrides"]["SortKey"], "KeyType": "RANGE"}
    else:
        assert len(keys) == 1


def test_rust_functions(raw, scenario):
    fns = of_type(scenario["final"], "AWS::Lambda::Function")
    rust = {k: v for k, v in fns.items() if k != "FerryConfigFunction"}
    expected = {"EnqueueFunction", "HeartbeatFunction"} | {f"DrainFunction{strip(r)}" for r in destinations(scenario)}
    assert set(rust) == expected
    for name, fn in rust.items():
        p = fn["Properties"]
        assert p["Architectures"] == ["arm64"], name
        assert p["Runtime"] == "provided.al2023", name
        assert p["Handler"] == "bootstrap", name
        assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        binary = {"EnqueueFunction": "enqueue", "HeartbeatFunction": "heartbeat"}.get(name, "drain")
        assert fn["Metadata"]["BuildProperties"]["Binary"] == binary, name
        assert "LogGroup" in p["LoggingConfig"], name
    assert fns["FerryConfigFunction"]["Properties"]["Architectures"] == ["arm64"]


def test_enqueue_environment(raw, scenario):
    p = scenario["final"]["Resources"]["EnqueueFunction"]["Properties"]
    env = p["Environment"]["Variables"]
    assert set(env) == ENQUEUE_ENV
    assert env["FERRY_BUFFERS"] == {"Fn::GetAtt": ["FerryConfig", "Buffers"]}
    assert env["FERRY_TABLE"] in ({"Ref": "TableName"}, scenario["overrides"]["TableName"])


def test_drain_write_cap_is_a_parameter_off_by_default(raw, scenario):
    p = raw["Parameters"]["MaxWriteUnitsPerSecond"]
    assert p["Type"] == "Number" and p["Default"] == 0 and p["MinValue"] == 0
    drain_group = next(
        g for g in raw["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        if g["Label"]["default"] == "Drain"
    )
    assert "MaxWriteUnitsPerSecond" in drain_group["Parameters"]
    final = scenario["final"]["Resources"]
    for region in destinations(scenario):
        env = final[f"DrainFunction{strip(region)}"]["Properties"]["Environment"]["Variables"]
        # Every drain to a destination reads the same cap, and the schedule that says how
        # overlapping ticks share it (the drain parses the expression it is given).
        overrides = scenario["overrides"]
        cap = as_int(raw, env["FERRY_MAX_WCU"], overrides)
        assert cap == int(overrides.get("MaxWriteUnitsPerSecond", 0))
        schedule = resolve_param(raw, env["FERRY_DRAIN_SCHEDULE"], overrides)
        assert schedule == overrides.get("DrainSchedule", "rate(1 minute)")


def test_drain_per_destination(raw, scenario):
    final = scenario["final"]["Resources"]
    overrides = scenario["overrides"]
    names = dict(e.split("=") for e in overrides.get("DestinationTableNames", "").split(",") if e)
    roles = dict(e.split("=", 1) for e in overrides.get("DestinationRoleArns", "").split(",") if e)
    for region in destinations(scenario):
        s = strip(region)
        fn = final[f"DrainFunction{s}"]["Properties"]
        env = fn["Environment"]["Variables"]
        assert set(env) - CONFLICT_ENV == DRAIN_ENV | ({"FERRY_DESTINATION_ROLE_ARN"} if roles else set())
        assert env["FERRY_DESTINATION_REGION"] == region
        assert env["FERRY_SOURCE_REGION"] == "us-east-1"
        assert env["FERRY_DESTINATION_TABLE"] == names.get(region, overrides["TableName"])
        assert env["FERRY_BUFFER_URL"] == {"Ref": f"Buffer{s}"}
        assert env["FERRY_DLQ_URL"] == {"Ref": f"BufferDlq{s}"}
        if roles:
            assert env["FERRY_DESTINATION_ROLE_ARN"] == roles[region]
        budget = as_int(raw, env["FERRY_DRAIN_BUDGET_S"], overrides)
        timeout = as_int(raw, fn["Timeout"], overrides)
        assert timeout > budget, "the drain must finish its budget before Lambda stops it"
        cap = as_int(raw, env["FERRY_MAX_DRAIN_CONCURRENCY"], overrides)
        assert reserved(raw, fn["ReservedConcurrentExecutions"], overrides) == 2 * cap
        rule = final[f"DrainFunction{s}Tick"]
        assert rule["Type"] == "AWS::Events::Rule"
        assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
        assert rule["Properties"]["State"] == "ENABLED"
        invoke = final[f"DrainFunction{s}EventInvokeConfig"]["Properties"]
        assert invoke["MaximumRetryAttempts"] == 0


def test_queues_encrypted_retained_and_tls_only(raw, scenario):
    final = scenario["final"]["Resources"]
    queues = of_type(scenario["final"], "AWS::SQS::Queue")
    expected = {"EnqueueFailures"} | {f"{k}{strip(r)}" for r in destinations(scenario) for k in ("Buffer", "BufferDlq")}
    assert set(queues) == expected
    policies = of_type(scenario["final"], "AWS::SQS::QueuePolicy").values()
    for name, q in queues.items():
        p = q["Properties"]
        assert p.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in p, f"{name} is not encrypted"
        assert p["MessageRetentionPeriod"] == FOURTEEN_DAYS, name
        guarding = [
            pol for pol in policies
            if {"Ref": name} in pol["Properties"]["Queues"]
            and any(
                st["Effect"] == "Deny" and st["Principal"] == "*"
                and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                for st in pol["Properties"]["PolicyDocument"]["Statement"]
            )
        ]
        assert guarding, f"{name} has no policy denying non-TLS access"
        for pol in guarding:
            for st in pol["Properties"]["PolicyDocument"]["Statement"]:
                assert st["Resource"] == {"Fn::GetAtt": [name, "Arn"]}, f"{name}: policy names another resource"
    for region in destinations(scenario):
        buffer = final[f"Buffer{strip(region)}"]["Properties"]
        redrive = buffer["RedrivePolicy"]
        dlq_name = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert dlq_name == f"BufferDlq{strip(region)}"
        assert as_int(raw, redrive["maxReceiveCount"]) >= 1
        dlq = final[dlq_name]["Properties"]
        # A message moved to a DLQ keeps its original enqueue time.
        assert dlq["MessageRetentionPeriod"] >= buffer["MessageRetentionPeriod"]


def test_iam_least_privilege(raw, scenario):
    final = scenario["final"]["Resources"]
    roles = of_type(scenario["final"], "AWS::IAM::Role")
    extra = of_type(scenario["final"], "AWS::IAM::Policy")
    # Only the roles we wrote: SAM must not add any (every function names its role).
    expected = {"EnqueueRole", "FerryConfigRole", "HeartbeatRole"} | {f"DrainRole{strip(r)}" for r in destinations(scenario)}
    assert set(roles) == expected
    for fn in of_type(scenario["final"], "AWS::Lambda::Function").values():
        assert "ManagedPolicyArns" not in json.dumps(fn)
    all_statements = [st for r in roles.values() for st in statements(r)]
    all_statements += [st for p in extra.values() for st in p["Properties"]["PolicyDocument"]["Statement"]]
    for st in all_statements:
        assert st["Effect"] == "Allow"
        for action in listify(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"
        for resource in listify(st["Resource"]):
            text = json.dumps(resource)
            assert resource != "*", f"wildcard resource in {st}"
            if "*" in text:
                # ListStreams names no stream; it is scoped to this table's streams.
                assert listify(st["Action"]) == ["dynamodb:ListStreams"], st
                assert text.endswith('/stream/*"'), st
    # one send grant per destination, each naming one buffer, all on the enqueue role
    sends = {k: v for k, v in extra.items() if k.startswith("EnqueueSend")}
    assert set(sends) == {f"EnqueueSend{strip(r)}" for r in destinations(scenario)}
    for name, pol in sends.items():
        assert pol["Properties"]["Roles"] == [{"Ref": "EnqueueRole"}]
        (st,) = pol["Properties"]["PolicyDocument"]["Statement"]
        assert st["Action"] == "sqs:SendMessage"
        assert st["Resource"] == {"Fn::GetAtt": [name.replace("EnqueueSend", "Buffer"), "Arn"]}


def test_each_drain_touches_only_its_own_things(raw, scenario):
    final = scenario["final"]["Resources"]
    overrides = scenario["overrides"]
    roles_given = dict(e.split("=", 1) for e in overrides.get("DestinationRoleArns", "").split(",") if e)
    names = dict(e.split("=") for e in overrides.get("DestinationTableNames", "").split(",") if e)
    for region in destinations(scenario):
        s = strip(region)
        sts = list(statements(final[f"DrainRole{s}"]))
        refs = json.dumps(sts)
        others = [strip(r) for r in destinations(scenario) if r != region]
        for other in others:
            assert f"Buffer{other}" not in refs and f"BufferDlq{other}" not in refs
        by_sid = {st["Sid"]: st for st in sts}
        assert by_sid["Buffer"]["Resource"] == {"Fn::GetAtt": [f"Buffer{s}", "Arn"]}
        assert by_sid["DeadLetter"]["Resource"] == {"Fn::GetAtt": [f"BufferDlq{s}", "Arn"]}
        if roles_given:
            assert "DestinationTable" not in by_sid
            assert by_sid["DestinationRole"]["Action"] == "sts:AssumeRole"
            assert by_sid["DestinationRole"]["Resource"] == roles_given[region]
        else:
            assert "DestinationRole" not in by_sid
            table = names.get(region, overrides["TableName"])
            assert by_sid["DestinationTable"]["Resource"] == f"arn:aws:dynamodb:{region}:123456789012:table/{table}"
            # Attribute merge also updates (read, merge, conditional UpdateItem).
            merge = {"dynamodb:UpdateItem"} if overrides.get("MergeMode") == "attribute" else set()
            assert set(by_sid["DestinationTable"]["Action"]) == {
                "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable",
                "dynamodb:ListTagsOfResource",
            } | merge


def test_enqueue_role(raw, scenario):
    by_sid = {st["Sid"]: st for st in statements(scenario["final"]["Resources"]["EnqueueRole"])}
    assert set(by_sid["StampAndTombstone"]["Action"]) == {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem"}
    assert by_sid["StampAndTombstone"]["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    # Publishing the settings other regions' drains check: tags on its own table only.
    assert set(by_sid["PublishSettings"]["Action"]) == {"dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"}
    assert by_sid["PublishSettings"]["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    assert by_sid["TagSettings"]["Action"] == "dynamodb:TagResource"
    assert by_sid["TagSettings"]["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    assert set(by_sid["ReadStream"]["Action"]) == {
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"
    }
    assert by_sid["OnFailureDestination"]["Resource"] == {"Fn::GetAtt": ["EnqueueFailures", "Arn"]}


def test_alarms(raw, scenario):
    alarms = of_type(scenario["final"], "AWS::CloudWatch::Alarm")
    topic = scenario["overrides"].get("AlarmTopicArn")
    def metric(a):
        return a["Properties"]["Namespace"], a["Properties"]["MetricName"]
    for region in destinations(scenario):
        s = strip(region)
        dlq = alarms[f"DlqDepthAlarm{s}"]["Properties"]
        assert metric(alarms[f"DlqDepthAlarm{s}"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"
        assert dlq["Dimensions"][0]["Value"] == {"Fn::GetAtt": [f"BufferDlq{s}", "QueueName"]}
        age = alarms[f"BufferAgeAlarm{s}"]["Properties"]
        assert metric(alarms[f"BufferAgeAlarm{s}"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
        assert age["Dimensions"][0]["Value"] == {"Fn::GetAtt": [f"Buffer{s}", "QueueName"]}
        assert metric(alarms[f"DrainErrorsAlarm{s}"]) == ("AWS/Lambda", "Errors")
        assert metric(alarms[f"DestinationUnreachableAlarm{s}"]) == (namespace(scenario), "DestinationReachable")
        # every alarm on the drain's EMF names the pair the way the drain's lines do
        for name, a in alarms.items():
            p = a["Properties"]
            if name.endswith(s) and p["Namespace"] == namespace(scenario):
                assert p["Dimensions"] == [{"Name": "TableName", "Value": table(scenario)},
                                           {"Name": "ReceivingRegion", "Value": region}], name
    assert metric(alarms["EnqueueIteratorAgeAlarm"]) == ("AWS/Lambda", "IteratorAge")
    assert metric(alarms["EnqueueErrorsAlarm"]) == ("AWS/Lambda", "Errors")
    assert metric(alarms["EnqueueFailuresAlarm"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert metric(alarms["EnqueuePoisonAlarm"]) == (namespace(scenario), "Poison")
    for name, a in alarms.items():
        if topic:
            assert a["Properties"]["AlarmActions"] == [topic], name
        assert "docs/operations.md#" in a["Properties"]["AlarmDescription"], name


def test_alarm_runbook_anchors_exist(raw):
    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = set(re.findall(r"docs/operations\.md#([a-z0-9-]+)", (ROOT / "template.yaml").read_text()))
    assert anchors
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    assert anchors <= headings, f"runbook lacks sections for {anchors - headings}"


def test_dashboard(raw):
    # The dashboard is not in a loop: read it as written (SEARCH covers every destination).
    body, variables = raw["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    text = body.replace("${AWS::Region}", "us-east-1")
    for name in variables:
        text = text.replace("${" + name + "}", "x")
    assert "${" not in text, "an unresolved variable in the dashboard"
    widgets = json.loads(text)["widgets"]
    titles = " ".join(w["properties"]["title"].lower() for w in widgets)
    for word in ("backlog", "lag", "applied", "conflicts"):
        assert word in titles
    searches = re.findall(r"SEARCH\('\{([^}]*)\}", text)
    # every search of Ferry's metrics reads the stack's namespace and its table's series
    ours = [s for s in searches if not s.startswith("AWS/")]
    assert ours and all(s in ("x,TableName,ReceivingRegion", "x,TableName") for s in ours), ours
    assert "MetricName=\\\"ReplicationLatency\\\" TableName=\\\"x\\\"', 'p99', 60)" in body.replace(
        "${Table}", "x")


def rust_metric_names():
    """Metric names the functions emit (their EMF definitions), read from the sources."""
    names = set()
    for path in [ROOT / "functions/drain/src/report.rs", ROOT / "functions/enqueue/src/outcome.rs",
                 ROOT / "functions/heartbeat/src/main.rs"]:
        if path.exists():
            # `Metric::count("Name", ..)`, `Metric::new("Name", unit, ..)`, `count("Name", ..)`,
            # `Metric::values("Name", ..)`, `flag("Name", ..)`
            names |= set(re.findall(r'\b(?:count|new|values|flag)\(\s*"([A-Z][A-Za-z0-9]+)",',
                                    path.read_text()))
    return names


def test_dashboard_and_alarms_name_metrics_the_functions_emit(raw):
    emitted = rust_metric_names()
    if not emitted:
        pytest.skip("function sources not found")
    text = (ROOT / "template.yaml").read_text()
    used = set(re.findall(r'MetricName=\\"([A-Za-z0-9]+)\\"', text))
    used |= set(re.findall(r'\\"([A-Z][A-Za-z0-9]+)\\"(?= OR|\))', text))
    used |= {"DestinationReachable"}
    used = {u for u in used if not u.startswith("Approximate")}
    assert used <= emitted, f"not emitted by the functions: {used - emitted}"


# --------------------------------------------------------------------------------------------
# issue #17: queue policies, alarms that can fire, smaller hardening
# --------------------------------------------------------------------------------------------
MESSAGE_ACTIONS = {"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"}
STREAM_RETENTION_S = 24 * 3600


def queue_policy_statements(resources, queue):
    (policy,) = [
        p for p in resources.values()
        if p["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue} in p["Properties"]["Queues"]
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def is_tls_deny(st):
    return st["Effect"] == "Deny" and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}


def exempt_from(statements, action):
    """The principals (aws:PrincipalArn) the policy's one deny of `action` leaves out; [] when it
    denies everyone."""
    denies = [st for st in statements if st["Effect"] == "Deny" and not is_tls_deny(st)
              and action in listify(st["Action"])]
    assert len(denies) == 1, f"expected one deny of {action}, got {denies}"
    (st,) = denies
    assert st["Principal"] == "*", st
    condition = dict(st["Condition"])
    # AWS services acting as themselves (SQS moving a message to its DLQ) are left out; a
    # service acting for a caller carries the caller's aws:PrincipalArn.
    assert condition.pop("Bool") == {"aws:PrincipalIsAWSService": "false"}, st
    if not condition:
        return []
    assert set(condition) == {"ArnNotEquals"} and set(condition["ArnNotEquals"]) == {"aws:PrincipalArn"}, st
    return listify(condition["ArnNotEquals"]["aws:PrincipalArn"])


def test_queue_policies_deny_messages_to_all_but_ferry(raw, scenario):
    final = scenario["final"]["Resources"]
    operator = scenario["overrides"].get("OperatorRoleArn")
    enqueue = {"Fn::GetAtt": ["EnqueueRole", "Arn"]}
    for region in destinations(scenario):
        s = strip(region)
        drain = {"Fn::GetAtt": [f"DrainRole{s}", "Arn"]}
        ops = [operator] if operator else []
        expected = {
            # enqueue sends; the drain takes, and re-queues pending records; operators re-send.
            f"Buffer{s}": {
                "sqs:SendMessage": [enqueue, drain, *ops],
                "sqs:ReceiveMessage": [drain, *ops],
                "sqs:DeleteMessage": [drain, *ops],
            },
            # the drain dead-letters; only operators read, redrive (delete) and re-send.
            f"BufferDlq{s}": {
                "sqs:SendMessage": [drain, *ops],
                "sqs:ReceiveMessage": ops,
                "sqs:DeleteMessage": ops,
            },
        }
        for queue, want in expected.items():
            sts = queue_policy_statements(final, queue)
            assert any(is_tls_deny(st) and st["Action"] == "sqs:*" for st in sts), queue
            for action, principals in want.items():
                got = exempt_from(sts, action)
                assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, principals)), (queue, action, got)
            for st in sts:
                assert st["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}, (queue, st)
                if st["Effect"] == "Deny" and not is_tls_deny(st):
                    # administrators keep managing the queue: only message actions are denied
                    assert set(listify(st["Action"])) <= MESSAGE_ACTIONS, (queue, st)
                if st["Effect"] == "Allow":
                    # a grant here must not widen the set the denies leave
                    assert st["Principal"] != "*", (queue, st)
                    for action in listify(st["Action"]):
                        allowed = map(json.dumps, want.get(action, []))
                        assert set(map(json.dumps, listify(st["Principal"]["AWS"]))) <= set(allowed), (queue, st)


def test_operator_role_parameter(raw):
    p = raw["Parameters"]["OperatorRoleArn"]
    assert p["Type"] == "String" and p["Default"] == ""
    pattern = re.compile(p["AllowedPattern"])
    for ok in ["", "arn:aws:iam::123456789012:role/ferry-operator",
               "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0a1b"]:
        assert pattern.fullmatch(ok), ok
    for bad in ["arn:aws:iam::123456789012:user/alice", "ferry-operator", "arn:aws:iam::123:role/x"]:
        assert not pattern.fullmatch(bad), bad
    assert raw["Conditions"]["HasOperatorRole"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OperatorRoleArn"}, ""]}]}


# Alarm (logical name without the region) -> TreatMissingData. Silence of a metric every run
# reports is a stalled pipeline (breaching); counts, flags and queue depths stay silent when all
# is well (notBreaching). A new alarm must be placed here.
TREAT_MISSING_DATA = {
    "DestinationUnreachableAlarm": "breaching",
    "DlqDepthAlarm": "notBreaching",
    "BufferAgeAlarm": "notBreaching",
    "DrainErrorsAlarm": "notBreaching",
    "SettingsMismatchAlarm": "notBreaching",
    "EnqueueIteratorAgeAlarm": "notBreaching",
    "EnqueueErrorsAlarm": "notBreaching",
    "EnqueueModeMismatchAlarm": "notBreaching",
    "EnqueueFailuresAlarm": "notBreaching",
    "EnqueuePoisonAlarm": "notBreaching",
    "DrainDestinationErrorAlarm": "notBreaching",
    "DrainAccessDeniedAlarm": "notBreaching",
    "DrainRefusedAlarm": "notBreaching",
    "PendingAgeAlarm": "notBreaching",
    "ReplicationLatencyAlarm": "breaching",
}


def test_alarms_treat_missing_data_by_meaning(raw, scenario):
    alarms = of_type(scenario["final"], "AWS::CloudWatch::Alarm")
    suffixes = tuple(strip(r) for r in destinations(scenario))
    seen = set()
    for name, a in alarms.items():
        base = next((name[: -len(s)] for s in suffixes if name.endswith(s) and name[: -len(s)] in TREAT_MISSING_DATA), name)
        assert base in TREAT_MISSING_DATA, f"{name}: decide its TreatMissingData here"
        assert a["Properties"]["TreatMissingData"] == TREAT_MISSING_DATA[base], name
        seen.add(base)
    assert seen == set(TREAT_MISSING_DATA)
    # the heartbeat is reported by every drain run: a silent drain for 15 minutes fires it
    for region in destinations(scenario):
        hb = alarms[f"DestinationUnreachableAlarm{strip(region)}"]["Properties"]
        assert hb["Period"] * hb["EvaluationPeriods"] == 900


def test_every_treat_missing_data_is_justified():
    lines = (ROOT / "template.yaml").read_text().splitlines()
    found = 0
    for i, line in enumerate(lines):
        m = re.match(r"\s+TreatMissingData: (\w+)$", line)
        if not m:
            continue
        found += 1
        comment = lines[i - 1].strip()
        assert comment.startswith(f"# {m.group(1)}: "), f"line {i + 1}: justify {m.group(1)} on the line above"
        assert len(lines[i - 1]) <= 100, f"line {i}: one short line"
    assert found == len(TREAT_MISSING_DATA)


def test_poison_alarm_watches_what_enqueue_publishes(raw, scenario):
    p = scenario["final"]["Resources"]["EnqueuePoisonAlarm"]["Properties"]
    assert (p["Namespace"], p["MetricName"]) == (namespace(scenario), "Poison")
    assert p["Dimensions"] == [{"Name": "TableName", "Value": table(scenario)}]
    assert p["Statistic"] == "Sum" and p["Threshold"] == 0 and p["ComparisonOperator"] == "GreaterThanThreshold"
    assert "Poison" in rust_metric_names()


def test_metrics_namespace_is_one_parameter_every_function_reads(raw, scenario):
    assert raw["Parameters"]["MetricsNamespace"]["Default"] == "Ferry"
    assert raw["Globals"]["Function"]["Environment"]["Variables"]["FERRY_METRICS_NAMESPACE"] == {
        "Ref": "MetricsNamespace"}
    emf = ROOT / "shared/aws/src/emf.rs"
    if emf.exists():
        text = emf.read_text()
        # the one reader of the variable, its default the parameter's, the dimension names the
        # alarms use
        assert 'NAMESPACE_VARIABLE: &str = "FERRY_METRICS_NAMESPACE"' in text
        assert 'DEFAULT_NAMESPACE: &str = "Ferry"' in text
        assert 'TABLE_NAME: &str = "TableName"' in text and 'RECEIVING_REGION: &str = "ReceivingRegion"' in text
    for name, a in of_type(scenario["final"], "AWS::CloudWatch::Alarm").items():
        ns = a["Properties"]["Namespace"]
        assert ns.startswith("AWS/") or ns == namespace(scenario), name
    # the drain knows its table's name for the TableName dimension
    for region in destinations(scenario):
        env = scenario["final"]["Resources"][f"DrainFunction{strip(region)}"]["Properties"]["Environment"]["Variables"]
        assert env["FERRY_TABLE"] == table(scenario)


def test_every_alarm_notifies_a_topic(raw, scenario):
    final = scenario["final"]
    given = scenario["overrides"].get("AlarmTopicArn")
    topic = given or {"Ref": "AlarmTopic"}
    own = final["Resources"]["AlarmTopic"]
    assert own["Type"] == "AWS::SNS::Topic" and own["Condition"] == "CreateAlarmTopic"
    assert final["Conditions"]["CreateAlarmTopic"] == {"Fn::Equals": [given or "", ""]}
    for name, a in of_type(final, "AWS::CloudWatch::Alarm").items():
        assert a["Properties"]["AlarmActions"] == [topic], name
        assert a["Properties"]["OKActions"] == [topic], name
    out = final["Outputs"]["AlarmNotificationTopicArn"]
    assert out["Value"] == topic
    assert out["Export"]["Name"] == "ferry-AlarmNotificationTopicArn"


def test_buffers_and_dlqs_take_the_largest_message_and_are_retained(raw, scenario):
    final = scenario["final"]["Resources"]
    core = ROOT / "shared/core/src/buffer.rs"
    packed = 1_048_576
    if core.exists():
        m = re.search(r"pub const SQS_MAX_MESSAGE_BYTES: usize = ([0-9_]+);", core.read_text())
        packed = int(m.group(1).replace("_", ""))
    for region in destinations(scenario):
        for kind in ("Buffer", "BufferDlq"):
            q = final[f"{kind}{strip(region)}"]
            assert q["Properties"]["MaximumMessageSize"] == 1048576 == packed, kind
            assert q["DeletionPolicy"] == "Retain" and q["UpdateReplacePolicy"] == "Retain", kind


def test_stream_record_age_within_stream_retention(raw, scenario):
    age = raw["Parameters"]["StreamMaxRecordAgeSeconds"]
    assert age["MaxValue"] <= STREAM_RETENTION_S, "older than the stream keeps: the record is trimmed first"
    assert age["MinValue"] >= 60 and age["Default"] <= STREAM_RETENTION_S
    p = scenario["final"]["Resources"]["EnqueueFunctionStream"]["Properties"]
    assert 60 <= p["MaximumRecordAgeInSeconds"] <= STREAM_RETENTION_S  # never -1 (infinite)
    assert 0 <= p["MaximumRetryAttempts"]  # never -1: the record age is the real bound


def test_tagging_only_ferry_tag_keys(raw, scenario):
    statements_ = [st for r in of_type(scenario["final"], "AWS::IAM::Role").values() for st in statements(r)]
    statements_ += [st for p in of_type(scenario["final"], "AWS::IAM::Policy").values()
                    for st in p["Properties"]["PolicyDocument"]["Statement"]]
    tagging = [st for st in statements_ if any(re.search(r":(Tag|Untag)", a) for a in listify(st["Action"]))]
    assert tagging, "enqueue publishes its settings as tags"
    for st in tagging:
        assert all(re.search(r":(Tag|Untag)", a) for a in listify(st["Action"])), f"keep tagging alone: {st}"
        assert st["Condition"] == {"ForAllValues:StringLike": {"aws:TagKeys": ["ferry:*"]}}, st
    # the keys enqueue publishes all fall under the pattern
    peer = ROOT / "shared/core/src/peer.rs"
    if peer.exists():
        keys = re.findall(r'pub const TAG_\w+: &str = "([^"]+)";', peer.read_text())
        assert keys and all(k.startswith("ferry:") for k in keys), keys


def test_drain_role_grants_only_the_calls_it_makes(raw, scenario):
    final = scenario["final"]["Resources"]
    for region in destinations(scenario):
        by_sid = {st["Sid"]: st for st in statements(final[f"DrainRole{strip(region)}"])}
        # ReceiveMessage, DeleteMessageBatch, SendMessageBatch (re-queue); SendMessage (dead-letter)
        assert set(listify(by_sid["Buffer"]["Action"])) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:ListQueueTags"}
        assert listify(by_sid["DeadLetter"]["Action"]) == ["sqs:SendMessage"]
        actions = {a for st in by_sid.values() for a in listify(st["Action"])}
        for unused in ("sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "cloudwatch:PutMetricData"):
            assert unused not in actions, unused


def test_reserved_concurrency_is_twice_the_cap_at_every_allowed_cap(raw):
    cap = raw["Parameters"]["MaxDrainConcurrency"]
    loop = raw["Resources"]["Fn::ForEach::Destinations"][2]
    fn = next(v for k, v in loop.items() if k.startswith("DrainFunction"))
    index, values = fn["Properties"]["ReservedConcurrentExecutions"]["Fn::Select"]
    assert index == {"Ref": "MaxDrainConcurrency"}
    assert len(values) == cap["MaxValue"] + 1
    assert all(v == 2 * i for i, v in enumerate(values))


def test_drain_fan_out_grants_its_two_calls_on_its_own_resources(raw, scenario):
    final = scenario["final"]["Resources"]
    assert raw["Parameters"]["MaxDrainConcurrency"]["Default"] > 1
    assert raw["Parameters"]["MaxDrainConcurrency"]["MinValue"] == 1
    for region in destinations(scenario):
        s = strip(region)
        policy = final[f"DrainFanOut{s}"]
        assert policy["Condition"] == "DrainFanOut"
        assert policy["Properties"]["Roles"] == [{"Ref": f"DrainRole{s}"}]
        by_sid = {st["Sid"]: st for st in policy["Properties"]["PolicyDocument"]["Statement"]}
        assert set(by_sid) == {"Backlog", "StartWorkers"}
        assert by_sid["Backlog"]["Action"] == "sqs:GetQueueAttributes"
        assert by_sid["Backlog"]["Resource"] == {"Fn::GetAtt": [f"Buffer{s}", "Arn"]}
        assert by_sid["StartWorkers"]["Action"] == "lambda:InvokeFunction"
        assert by_sid["StartWorkers"]["Resource"] == {"Fn::GetAtt": [f"DrainFunction{s}", "Arn"]}
        # Held-back worker events expire instead of starting long after their tick.
        invoke = final[f"DrainFunction{s}EventInvokeConfig"]["Properties"]
        assert invoke["MaximumEventAgeInSeconds"] <= 60
    cond = raw["Conditions"]["DrainFanOut"]
    assert cond == {"Fn::Not": [{"Fn::Equals": [{"Ref": "MaxDrainConcurrency"}, 1]}]}


# --------------------------------------------------------------------------------------------
# FerryConfig, the deploy-time helper (its inline code, executed here)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def helper(raw):
    code = raw["Resources"]["FerryConfigFunction"]["Properties"]["Code"]["ZipFile"]
    namespace: dict = {}
    exec(compile(code, "ferry_config_helper", "exec"), namespace)
    return namespace


def props(**extra):
    base = {
        "ServiceToken": "arn",
        "LocalRegion": "us-east-1",
        "DestinationRegions": ["eu-west-1", "ap-southeast-2"],
        "DestinationTableNames": "",
        "DestinationRoleArns": "",
        "TableName": "orders",
        "TableStreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000",
        "Buffereuwest1": "https://sqs.us-east-1.amazonaws.com/123456789012/ferry-buffer-eu-west-1",
        "Bufferapsoutheast2": "https://sqs.us-east-1.amazonaws.com/123456789012/ferry-buffer-ap-southeast-2",
        "Granteuwest1": "p1",
        "Grantapsoutheast2": "p2",
    }
    base.update(extra)
    return base


def test_helper_composes_ferry_buffers(helper):
    out = helper["compose"](props())
    assert out["Buffers"] == (
        "eu-west-1=https://sqs.us-east-1.amazonaws.com/123456789012/ferry-buffer-eu-west-1,"
        "ap-southeast-2=https://sqs.us-east-1.amazonaws.com/123456789012/ferry-buffer-ap-southeast-2"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"DestinationRegions": ["us-east-1", "eu-west-1"]}, "own region"),
        ({"DestinationRegions": ["eu-west-1", "eu-west-1"]}, "twice"),
        ({"DestinationRegions": ["EU West"]}, "not a region"),
        ({"DestinationRegions": []}, "empty"),
        ({"DestinationTableNames": "eu-west-2=x"}, "not in DestinationRegions"),
        ({"DestinationRoleArns": "eu-west-1=arn:aws:iam::1:role/r"}, "all or nothing"),
        ({"TableStreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/other/stream/x"}, "not a stream of table"),
        ({"TableStreamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/x"}, "not a stream of table"),
        ({"Bufferapsoutheast2": None, "DestinationRegions": ["eu-west-1", "ap-southeast-2", "us-west-2"]}, "do not match"),
    ],
)
def test_helper_rejects_bad_settings(helper, extra, message):
    p = props(**extra)
    p = {k: v for k, v in p.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        helper["compose"](p)


def test_helper_always_answers_cloudformation(helper):
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/response"
    event = {
        "RequestType": "Create", "ResponseURL": url, "StackId": "stack", "RequestId": "r1",
        "LogicalResourceId": "FerryConfig", "ResourceProperties": props(),
    }
    helper["handler"](event, None)
    helper["handler"]({**event, "ResourceProperties": props(DestinationRegions=["us-east-1"])}, None)
    helper["handler"]({**event, "RequestType": "Delete", "PhysicalResourceId": "FerryConfig-config",
                       "ResourceProperties": {}}, None)
    server.shutdown()
    assert [g["Status"] for g in got] == ["SUCCESS", "FAILED", "SUCCESS"]
    assert got[0]["Data"]["Buffers"].startswith("eu-west-1=https://")
    assert "own region" in got[1]["Reason"]
    assert all(g["PhysicalResourceId"] == "FerryConfig-config" for g in got)


# --------------------------------------------------------------------------------------------
# the deployable form (make sam-template): loops unrolled, nothing else changed
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ["us-east-1", "eu-west-1"])
def test_deployable_is_the_transform_without_loops(raw, env, tmp_path):
    overrides = render.environment_parameters(env)
    out = tmp_path / "deploy" / env / "template.json"
    deployable = render.deployable(overrides, out)
    text = json.dumps(deployable)
    assert "Fn::ForEach" not in text and "&{" not in text
    assert '"Ref": {' not in text, "a Ref to a computed name is valid only under the transform"
    assert deployable["Transform"] == "AWS::Serverless-2016-10-31"
    # the same resources, conditions and outputs as the language extensions make
    expanded = render.expand(overrides, region=env)
    for section in ("Resources", "Conditions", "Outputs"):
        assert set(deployable.get(section, {})) == set(expanded.get(section, {})), section
    dests = overrides["DestinationRegions"].split(",")
    for region in dests:
        fn = deployable["Resources"][f"DrainFunction{strip(region)}"]
        assert fn["Properties"]["Environment"]["Variables"]["FERRY_DESTINATION_REGION"] == region
        assert fn["Properties"]["Environment"]["Variables"]["FERRY_BUFFER_URL"] == {"Ref": f"Buffer{strip(region)}"}
    # code paths point at the workspace from where the file is written
    for name in ["EnqueueFunction"] + [f"DrainFunction{strip(r)}" for r in dests]:
        code = deployable["Resources"][name]["Properties"]["CodeUri"]
        assert (out.parent / code).resolve() == ROOT.resolve(), name


def test_samconfig_builds_and_deploys_the_deployable_form():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("us-east-1", "eu-west-1"):
        build = config[env]["build"]["parameters"]
        deploy = config[env]["deploy"]["parameters"]
        assert build["template_file"] == f"target/deploy/{env}/template.json"
        assert deploy["template_file"] == f"{build['build_dir']}/template.yaml"
        assert build["cached"] is False, "a cache would checksum the whole workspace, target/ included"
    assert "template_file" not in config["default"].get("build", {}).get("parameters", {})


# --------------------------------------------------------------------------------------------
# samconfig.toml
# --------------------------------------------------------------------------------------------
def test_samconfig_has_an_environment_per_region(raw):
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    regions = {"us-east-1", "eu-west-1"}
    assert regions <= set(config)
    for region in regions:
        env = config[region]
        params = env["global"]["parameters"]
        assert params["region"] == region
        overrides = dict(o.split("=", 1) for o in params["parameter_overrides"])
        dests = overrides["DestinationRegions"].split(",")
        assert region not in dests and dests
        assert set(overrides) <= set(raw["Parameters"])
        deploy = env["deploy"]["parameters"]
        assert "CAPABILITY_AUTO_EXPAND" in deploy["capabilities"]
        assert "CAPABILITY_IAM" in deploy["capabilities"]
    # identical replication settings everywhere
    shared = ["AttrTs", "AttrOrigin", "AttrTombstone", "AttrTtl", "TombstoneLifetimeSeconds", "ItemFilter", "PartitionKey", "SortKey"]
    seen = [
        {k: v for k, v in (o.split("=", 1) for o in config[r]["global"]["parameters"]["parameter_overrides"]) if k in shared}
        for r in sorted(regions)
    ]
    assert all(s == seen[0] for s in seen)


# --------------------------------------------------------------------------------------------
# issue #17, finding 7: the end-to-end heartbeat
# --------------------------------------------------------------------------------------------
def test_heartbeat_alarm_per_pair_fires_on_silence(raw, scenario):
    alarms = of_type(scenario["final"], "AWS::CloudWatch::Alarm")
    for region in destinations(scenario):
        a = alarms[f"ReplicationLatencyAlarm{strip(region)}"]["Properties"]
        assert (a["Namespace"], a["MetricName"]) == (namespace(scenario), "ReplicationLatency")
        # the dimensions the drain's EMF lines carry for this pair (Global Tables' names)
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        assert dims == {"TableName": table(scenario), "ReceivingRegion": region}
        # every record's latency is a value of its own: a true percentile over all drains
        assert a["ExtendedStatistic"] == "p99" and "Statistic" not in a
        assert a["TreatMissingData"] == "breaching"
        assert a["ComparisonOperator"] == "GreaterThanThreshold"
        assert as_int(raw, a["Threshold"], scenario["overrides"]) >= 60000
        # a beat a minute: ten minutes without one is a stopped pipeline, not a late tick
        assert a["Period"] * a["EvaluationPeriods"] == 600
    assert "ReplicationLatency" in rust_metric_names()


def test_heartbeat_function_beats_every_minute_with_only_a_put_on_the_local_table(raw, scenario):
    res = scenario["final"]["Resources"]
    p = res["HeartbeatFunction"]["Properties"]
    assert p["Role"] == {"Fn::GetAtt": ["HeartbeatRole", "Arn"]}
    env = p["Environment"]["Variables"]
    assert set(env) == SHARED_ENV | {"FERRY_TABLE", "FERRY_PARTITION_KEY_TYPE", "FERRY_SORT_KEY_TYPE"}
    rules = [r for r in of_type(scenario["final"], "AWS::Events::Rule").values()
             if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["HeartbeatFunction", "Arn"]}]
    assert [r["Properties"]["ScheduleExpression"] for r in rules] == ["rate(1 minute)"]
    sts = list(statements(res["HeartbeatRole"]))
    assert {st["Sid"] for st in sts} == {"Logs", "PutSentinel"}
    (put,) = [st for st in sts if st["Sid"] == "PutSentinel"]
    assert listify(put["Action"]) == ["dynamodb:PutItem"]
    # the local table, exactly what enqueue stamps
    (stamp,) = [st for st in statements(res["EnqueueRole"]) if st["Sid"] == "StampAndTombstone"]
    assert put["Resource"] == stamp["Resource"]
    assert ":table/" in json.dumps(put["Resource"]) and "/stream" not in json.dumps(put["Resource"])


# --------------------------------------------------------------------------------------------
# issue #18: the operator CLI finds everything from the stack's outputs (cli/src/ops/stack.rs)
# --------------------------------------------------------------------------------------------
def cli_output_names():
    """The output names cli/src/ops/stack.rs reads: stack-wide and per-destination prefixes."""
    src = (ROOT / "cli/src/ops/stack.rs").read_text()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([A-Za-z]+)";', src))
    def listed(name):
        body = re.search(rf"pub const {name}: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
        return [consts[c.strip()] for c in body.split(",") if c.strip()]
    return listed("STACK_OUTPUTS"), listed("DESTINATION_OUTPUTS"), consts["DESTINATION_ROLE_ARN"]


def test_outputs_give_the_cli_what_it_reads(raw, scenario):
    stack_wide, per_destination, role_prefix = cli_output_names()
    assert {"TableName", "Region", "DestinationRegions"} <= set(stack_wide)
    assert {"BufferUrl", "DlqUrl", "DrainFunction", "DrainRoleArn", "DestinationTable"} <= set(per_destination)
    out = scenario["final"]["Outputs"]
    overrides = scenario["overrides"]
    for name in stack_wide:
        assert name in out, name
    # The renderer resolves parameters and pseudo-parameters (region us-east-1).
    assert out["TableName"]["Value"] == overrides["TableName"]
    assert out["Region"]["Value"] == "us-east-1"
    assert out["DestinationRegions"]["Value"] == overrides["DestinationRegions"]
    names = dict(e.split("=") for e in overrides.get("DestinationTableNames", "").split(",") if e)
    roles = dict(e.split("=", 1) for e in overrides.get("DestinationRoleArns", "").split(",") if e)
    for region in destinations(scenario):
        s = strip(region)
        for prefix in per_destination:
            assert f"{prefix}{s}" in out, f"{prefix}{s}"
        assert out[f"BufferUrl{s}"]["Value"] == {"Ref": f"Buffer{s}"}
        assert out[f"DlqUrl{s}"]["Value"] == {"Ref": f"BufferDlq{s}"}
        assert out[f"DrainFunction{s}"]["Value"] == {"Ref": f"DrainFunction{s}"}
        assert out[f"DrainRoleArn{s}"]["Value"] == {"Fn::GetAtt": [f"DrainRole{s}", "Arn"]}
        # The table and role the drain itself is given.
        drain = scenario["final"]["Resources"][f"DrainFunction{s}"]["Properties"]["Environment"]["Variables"]
        assert out[f"DestinationTable{s}"]["Value"] == drain["FERRY_DESTINATION_TABLE"]
        assert drain["FERRY_DESTINATION_TABLE"] == names.get(region, overrides["TableName"])
        role = out[f"{role_prefix}{s}"]
        assert role["Condition"] == "UseDestinationRoles"
        if roles:
            assert role["Value"] == roles[region] == drain["FERRY_DESTINATION_ROLE_ARN"]


# --------------------------------------------------------------------------------------------
# issue #19: the conflict log
# --------------------------------------------------------------------------------------------
def test_conflict_log_parameters(raw):
    p = raw["Parameters"]
    assert p["ConflictLog"]["Default"] == "true"
    assert p["ConflictLog"]["AllowedValues"] == ["false", "true"]
    assert p["ConflictRetentionDays"]["Default"] == 14
    assert p["ConflictRetentionDays"]["MinValue"] >= 1
    assert raw["Conditions"]["ConflictLogOn"] == {"Fn::Equals": [{"Ref": "ConflictLog"}, "true"]}


def test_conflict_table_is_on_demand_with_ttl(raw, scenario):
    t = scenario["final"]["Resources"]["ConflictTable"]
    assert t["Condition"] == "ConflictLogOn"
    p = t["Properties"]
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["TableName"] == f"{table(scenario)}-ferry-conflicts"
    assert p["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    # The names the core writes (shared/core/src/conflict.rs).
    core = (ROOT / "shared/core/src/conflict.rs").read_text()
    assert 'pub const ID: &str = "id";' in core
    assert 'pub const EXPIRES_AT: &str = "expires_at";' in core
    assert 'format!("{table}-ferry-conflicts")' in core
    out = scenario["final"]["Outputs"]["ConflictTableName"]
    assert out["Condition"] == "ConflictLogOn"
    assert out["Value"] == {"Ref": "ConflictTable"}
    assert 'CONFLICT_TABLE: &str = "ConflictTableName"' in (ROOT / "cli/src/ops/stack.rs").read_text()


def test_each_drain_writes_only_its_destinations_conflict_log(raw, scenario):
    final = scenario["final"]["Resources"]
    overrides = scenario["overrides"]
    names = dict(e.split("=") for e in overrides.get("DestinationTableNames", "").split(",") if e)
    cross_account = bool(overrides.get("DestinationRoleArns"))
    for region in destinations(scenario):
        s = strip(region)
        dest = names.get(region, overrides["TableName"])
        env = final[f"DrainFunction{s}"]["Properties"]["Environment"]["Variables"]
        # The destination stack's ConflictTable: the same name scheme in every region.
        assert env["FERRY_CONFLICT_TABLE"] == f"{dest}-ferry-conflicts"
        assert as_int(raw, env["FERRY_CONFLICT_RETENTION_DAYS"], overrides) == 14
        by_sid = {st["Sid"]: st for st in statements(final[f"DrainRole{s}"]) if isinstance(st, dict) and "Sid" in st}
        if cross_account:
            # Through the destination role: that role grants it, not this one.
            assert "ConflictLog" not in by_sid
            continue
        st = by_sid["ConflictLog"]
        assert set(listify(st["Action"])) == {"dynamodb:BatchWriteItem", "dynamodb:PutItem"}
        assert st["Resource"] == f"arn:aws:dynamodb:{region}:123456789012:table/{dest}-ferry-conflicts"


def test_conflict_log_off_leaves_no_table_grant_or_variable(raw):
    overrides = dict(render.SCENARIOS["two-destinations"], ConflictLog="false")
    final = render.translate(render.expand(overrides), overrides)
    # CloudFormation leaves out what the condition turns off; the renderer keeps it, conditioned.
    assert final["Resources"]["ConflictTable"]["Condition"] == "ConflictLogOn"
    assert final["Outputs"]["ConflictTableName"]["Condition"] == "ConflictLogOn"
    for region in overrides["DestinationRegions"].split(","):
        s = strip(region)
        env = final["Resources"][f"DrainFunction{s}"]["Properties"]["Environment"]["Variables"]
        assert "FERRY_CONFLICT_TABLE" not in env
        sids = {st.get("Sid") for st in statements(final["Resources"][f"DrainRole{s}"]) if isinstance(st, dict)}
        assert "ConflictLog" not in sids
