#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff ddb7932a3a4ca86f8ee5a3962036e2a9c90ea821
source /opt/miniconda3/bin/activate
conda activate testbed
python -m pip install -e .
git checkout ddb7932a3a4ca86f8ee5a3962036e2a9c90ea821 tests/data.json tests/test_calc.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/data.json b/tests/data.json
index 3e44686..310215d 100644
--- a/tests/data.json
+++ b/tests/data.json
@@ -1 +1 @@
-{"cases": [1, 2]}
+{"cases": [1, 2, 3]}
diff --git a/tests/test_calc.py b/tests/test_calc.py
index 795c7d2..9e3167f 100644
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1,6 +1,10 @@
 import pytest
 
-from calc import sub
+from calc import add, sub
+
+
+def test_add():
+    assert add(2, 2) == 4
 
 
 def test_sub():
@@ -10,3 +14,8 @@ def test_sub():
 @pytest.mark.skip(reason="platform specific")
 def test_sub_platform():
     assert sub(0, 0) == 0
+
+
+@pytest.mark.parametrize("a,b", [(1, 2), (10, 20)])
+def test_add_param(a, b):
+    assert add(a, b) == a + b
diff --git a/tests/test_extra.py b/tests/test_extra.py
new file mode 100644
index 0000000..e652688
--- /dev/null
+++ b/tests/test_extra.py
@@ -0,0 +1,8 @@
+import pytest
+
+from calc import add
+
+
+@pytest.mark.xfail(reason="known limitation")
+def test_add_strings():
+    assert add("a", "b") == "ab"

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA tests/test_calc.py tests/test_extra.py
: '>>>>> End Test Output'
git checkout ddb7932a3a4ca86f8ee5a3962036e2a9c90ea821 tests/data.json tests/test_calc.py
