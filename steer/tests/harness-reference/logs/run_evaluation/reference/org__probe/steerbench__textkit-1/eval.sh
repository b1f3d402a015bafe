#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff 76595a44aa354d6a9f8644344253f47c6fa8fa71
source /opt/miniconda3/bin/activate
conda activate testbed
git checkout 76595a44aa354d6a9f8644344253f47c6fa8fa71 tests/test_slug.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/test_slug.py b/tests/test_slug.py
index b571c08..ea45ac8 100644
--- a/tests/test_slug.py
+++ b/tests/test_slug.py
@@ -10,6 +10,12 @@ from textkit import slugify
         pytest.param("  many   spaces  ", "many-spaces", id="whitespace"),
         pytest.param("Release 2.0 notes", "release-2-0-notes", id="digits"),
         pytest.param("already-a-slug", "already-a-slug", id="slug"),
+        pytest.param("Crème brûlée", "creme-brulee", id="french"),
+        pytest.param("Ångström unit", "angstrom-unit", id="swedish"),
+        pytest.param("naïve café", "naive-cafe", id="diaeresis"),
+        pytest.param("Straße", "strasse", id="german-eszett"),
+        pytest.param("Łódź", "lodz", id="polish"),
+        pytest.param("I ♥ Python", "i-python", id="symbol"),
     ],
 )
 def test_slugify(text, expected):
@@ -25,5 +31,9 @@ def test_max_length_does_not_end_with_separator():
     assert slugify("hello big world", max_length=9) == "hello-big"
 
 
+def test_max_length_counts_transliterated_characters():
+    assert slugify("Übergröße", max_length=8) == "ubergros"
+
+
 def test_empty():
     assert slugify("!!!") == ""

EOF_114329324912
: '>>>>> Start Test Output'
pytest -rA tests/test_slug.py
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout 76595a44aa354d6a9f8644344253f47c6fa8fa71 tests/test_slug.py
