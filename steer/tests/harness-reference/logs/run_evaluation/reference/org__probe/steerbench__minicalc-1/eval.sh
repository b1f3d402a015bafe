#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff 6b157c6f603e2ddf62996d272008433156a91b0a
source /opt/miniconda3/bin/activate
conda activate testbed
git checkout 6b157c6f603e2ddf62996d272008433156a91b0a tests/test_eval.py tests/test_parser.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/test_eval.py b/tests/test_eval.py
index 140d50f..ca9dcee 100644
--- a/tests/test_eval.py
+++ b/tests/test_eval.py
@@ -19,6 +19,21 @@ def test_arithmetic(source, expected):
     assert evaluate(source) == expected
 
 
+@pytest.mark.parametrize(
+    "source, expected",
+    [
+        ("2^10", 1024),
+        ("2^3^2", 512),
+        ("2**3**2", 512),
+        ("(2^3)^2", 64),
+        ("-2^2", -4),
+        ("2^-1", 0.5),
+    ],
+)
+def test_power(source, expected):
+    assert evaluate(source) == expected
+
+
 def test_variables():
     assert evaluate("x * y + 1", {"x": 3, "y": 4}) == 13
 
diff --git a/tests/test_parser.py b/tests/test_parser.py
index 00fe7f5..2db6b69 100644
--- a/tests/test_parser.py
+++ b/tests/test_parser.py
@@ -20,6 +20,14 @@ def test_unary_minus_binds_looser_than_power():
     assert parse("-2^2") == UnaryOp("-", BinOp("^", Number(2), Number(2)))
 
 
+def test_power_is_right_associative():
+    assert parse("2^3^2") == BinOp("^", Number(2), BinOp("^", Number(3), Number(2)))
+
+
+def test_power_with_negative_exponent():
+    assert parse("2^-x") == BinOp("^", Number(2), UnaryOp("-", Name("x")))
+
+
 def test_double_star_is_power():
     assert parse("x ** 2") == BinOp("^", Name("x"), Number(2))
 

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA tests/test_eval.py tests/test_parser.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout 6b157c6f603e2ddf62996d272008433156a91b0a tests/test_eval.py tests/test_parser.py
