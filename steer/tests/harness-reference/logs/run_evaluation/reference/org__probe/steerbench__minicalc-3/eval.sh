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
git checkout 6b157c6f603e2ddf62996d272008433156a91b0a tests/test_eval.py tests/test_tokenizer.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/test_eval.py b/tests/test_eval.py
index 140d50f..76f012a 100644
--- a/tests/test_eval.py
+++ b/tests/test_eval.py
@@ -19,6 +19,11 @@ def test_arithmetic(source, expected):
     assert evaluate(source) == expected
 
 
+def test_scientific_notation():
+    assert evaluate("1e3 + 2.5e-1") == 1000.25
+    assert evaluate("2e2*e", {"e": 2}) == 400.0
+
+
 def test_variables():
     assert evaluate("x * y + 1", {"x": 3, "y": 4}) == 13
 
diff --git a/tests/test_tokenizer.py b/tests/test_tokenizer.py
index 8200361..2e629b3 100644
--- a/tests/test_tokenizer.py
+++ b/tests/test_tokenizer.py
@@ -22,6 +22,27 @@ def test_decimal_numbers():
     assert isinstance(tokenize("2.0")[0].value, float)
 
 
+@pytest.mark.parametrize(
+    "source, expected",
+    [
+        ("1e3", 1000.0),
+        ("2.5E-4", 0.00025),
+        ("6.02e+23", 6.02e23),
+        (".5e1", 5.0),
+    ],
+)
+def test_scientific_notation(source, expected):
+    tokens = tokenize(source)
+    assert [t.kind for t in tokens] == [NUMBER, EOF]
+    assert tokens[0].value == expected
+    assert isinstance(tokens[0].value, float)
+
+
+def test_exponent_needs_digits():
+    assert values("2e") == [2, "e"]
+    assert values("1e+x") == [1, "e", "+", "x"]
+
+
 def test_two_character_operators():
     assert values("2**3 // 4") == [2, "**", 3, "//", 4]
 

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA tests/test_eval.py tests/test_tokenizer.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout 6b157c6f603e2ddf62996d272008433156a91b0a tests/test_eval.py tests/test_tokenizer.py
