"""Validates the served OpenAPI description (3.1) and prints what it holds."""
import json
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator

url = sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as res:
    spec = json.load(res)
errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
for e in errors:
    print(f"openapi-spec-validator: {e.message} at {list(e.path)}")
ops = [
    (m.upper(), p, op.get("operationId"))
    for p, item in spec["paths"].items()
    for m, op in item.items()
]
ids = [o[2] for o in ops]
dupes = sorted({i for i in ids if ids.count(i) > 1 or not i})
if dupes:
    print(f"duplicate or missing operationIds: {dupes}")
print(
    f"openapi-spec-validator: {len(errors)} errors; OpenAPI {spec['openapi']}, "
    f"{len(ops)} operations, {len(set(ids))} unique operationIds"
)
sys.exit(1 if errors or dupes else 0)
