#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
source /opt/miniconda3/bin/activate
conda activate testbed
python -m pip install -e .
git checkout bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb sympy/core/tests/test_basic.py sympy/printing/tests/test_latex.py
git apply -v - <<'EOF_114329324912'
diff --git a/sympy/core/tests/test_basic.py b/sympy/core/tests/test_basic.py
index c8e9553..f856180 100644
--- a/sympy/core/tests/test_basic.py
+++ b/sympy/core/tests/test_basic.py
@@ -1,2 +1,6 @@
 def test_a():
     assert True
+
+
+def test_b():
+    assert True
diff --git a/sympy/printing/tests/test_latex.py b/sympy/printing/tests/test_latex.py
index 5d05b51..24e1de7 100644
--- a/sympy/printing/tests/test_latex.py
+++ b/sympy/printing/tests/test_latex.py
@@ -1,2 +1,6 @@
 def test_l():
     pass
+
+
+def test_m():
+    pass

EOF_114329324912
: '>>>>> Start Test Output'
PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose sympy/core/tests/test_basic.py sympy/printing/tests/test_latex.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb sympy/core/tests/test_basic.py sympy/printing/tests/test_latex.py
