"""A client generated from the description (openapi-python-client) pages
products: page 2 of size 1 is the second product, not the first."""
import importlib
import json
import sys
import urllib.request

base, package_dir, admin_key = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, package_dir)
client_mod = importlib.import_module("commerce_client")
list_products = importlib.import_module("commerce_client.api.products.list_products")

def admin_post(path, body):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Admin-Key": admin_key},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.load(res)

client = client_mod.Client(base_url=base)
first = list_products.sync(client=client, page=1, size=1)
total = first.total
if total < 3:
    for i in range(3 - total):
        admin_post("/admin/products", {"name": f"client page {i}", "price": 100, "stock": 1})
ids = []
for page in (1, 2, 3):
    got = list_products.sync(client=client, page=page, size=1)
    assert got.page == page and got.size == 1, (got.page, got.size)
    assert len(got.items) == 1, got
    ids.append(got.items[0].id)
assert len(set(ids)) == 3 and ids == sorted(ids), ids
both = list_products.sync(client=client, page=1, size=2)
assert [p.id for p in both.items] == ids[:2], (both.items, ids)
print(f"generated client: pages 1..3 of size 1 are products {ids}; page 1 of size 2 is {ids[:2]}")
