#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff b8da33dac84fe706760e6d9c7247a91425a890ca
source /opt/miniconda3/bin/activate
conda activate testbed
git checkout b8da33dac84fe706760e6d9c7247a91425a890ca tests/test_query.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/test_query.py b/tests/test_query.py
index f041b83..13f8d9d 100644
--- a/tests/test_query.py
+++ b/tests/test_query.py
@@ -44,6 +44,20 @@ def test_recursive_descent_through_objects():
     assert query(data, "$..name") == [2, 1]
 
 
+def test_recursive_descent_into_arrays(store):
+    assert query(store, "$..price") == [8.95, 12.99, 8.99, 22.99, 19.95]
+    assert query(store, "$..isbn") == ["0-553-21311-3", "0-395-19395-8"]
+
+
+def test_recursive_descent_nested_arrays():
+    data = {"a": [[1, 2], [3]], "b": {"c": [4]}}
+    assert query(data, "$..[0]") == [[1, 2], 1, 3, 4]
+
+
+def test_recursive_descent_then_index(store):
+    assert query(store, "$..book[2].title") == ["Moby Dick"]
+
+
 def test_first(store):
     assert first(store, "$.store.bicycle.price") == 19.95
     assert first(store, "$.nothing", default="n/a") == "n/a"

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA tests/test_query.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout b8da33dac84fe706760e6d9c7247a91425a890ca tests/test_query.py
