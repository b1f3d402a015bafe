#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff cccccccccccccccccccccccccccccccccccccccc
source /opt/miniconda3/bin/activate
conda activate testbed
python -m pip install -e .
git checkout cccccccccccccccccccccccccccccccccccccccc doc/en/changelog.rst testing/test_terminal.py
git apply -v - <<'EOF_114329324912'
diff --git a/doc/en/changelog.rst b/doc/en/changelog.rst
index 3367afd..3e75765 100644
--- a/doc/en/changelog.rst
+++ b/doc/en/changelog.rst
@@ -1 +1 @@
-old
+new
diff --git a/testing/example_scripts/data.txt b/testing/example_scripts/data.txt
new file mode 100644
index 0000000..c2981a9
--- /dev/null
+++ b/testing/example_scripts/data.txt
@@ -0,0 +1 @@
+payload
diff --git a/testing/test_terminal.py b/testing/test_terminal.py
index 06a99d3..0f08491 100644
--- a/testing/test_terminal.py
+++ b/testing/test_terminal.py
@@ -1,2 +1,6 @@
 def test_a():
     pass
+
+
+def test_b():
+    pass

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA doc/en/changelog.rst testing/test_terminal.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout cccccccccccccccccccccccccccccccccccccccc doc/en/changelog.rst testing/test_terminal.py
