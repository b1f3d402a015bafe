#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff dddddddddddddddddddddddddddddddddddddddd
source /opt/miniconda3/bin/activate
conda activate testbed
python -m pip install -e .[test]
git checkout dddddddddddddddddddddddddddddddddddddddd 
git apply -v - <<'EOF_114329324912'
diff --git a/tests/roots/test-ext/conf.py b/tests/roots/test-ext/conf.py
new file mode 100644
index 0000000..7d4290a
--- /dev/null
+++ b/tests/roots/test-ext/conf.py
@@ -0,0 +1 @@
+x = 1
diff --git a/tests/test_ext_new.py b/tests/test_ext_new.py
new file mode 100644
index 0000000..36fe573
--- /dev/null
+++ b/tests/test_ext_new.py
@@ -0,0 +1,2 @@
+def test_new():
+    pass

EOF_114329324912
: '>>>>> Start Test Output'
tox --current-env -epy39 -v -- tests/roots/test-ext/conf.py tests/test_ext_new.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout dddddddddddddddddddddddddddddddddddddddd
