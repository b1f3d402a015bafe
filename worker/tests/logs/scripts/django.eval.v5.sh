#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen
export LANG=en_US.UTF-8
export LANGUAGE=en_US:en
export LC_ALL=en_US.UTF-8
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
source /opt/miniconda3/bin/activate
conda activate testbed
python -m pip install -e .
git checkout aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa tests/auth_tests/fixtures/users.json tests/auth_tests/test_validators.py tests/i18n/sampleproject/old.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/auth_tests/fixtures/users.json b/tests/auth_tests/fixtures/users.json
index fe51488..93d5140 100644
--- a/tests/auth_tests/fixtures/users.json
+++ b/tests/auth_tests/fixtures/users.json
@@ -1 +1 @@
-[]
+[{}]
diff --git a/tests/auth_tests/test_validators.py b/tests/auth_tests/test_validators.py
index 8a3ded5..87d8d73 100644
--- a/tests/auth_tests/test_validators.py
+++ b/tests/auth_tests/test_validators.py
@@ -4,3 +4,6 @@ from django.test import SimpleTestCase
 class V(SimpleTestCase):
     def test_old(self):
         pass
+
+    def test_new(self):
+        pass
diff --git a/tests/i18n/sampleproject/old.py b/tests/i18n/sampleproject/old.py
deleted file mode 100644
index 7d4290a..0000000
--- a/tests/i18n/sampleproject/old.py
+++ /dev/null
@@ -1 +0,0 @@
-x = 1
diff --git a/tests/migrations/test_new_module.py b/tests/migrations/test_new_module.py
new file mode 100644
index 0000000..f174823
--- /dev/null
+++ b/tests/migrations/test_new_module.py
@@ -0,0 +1,2 @@
+def test():
+    pass

EOF_114329324912
: '>>>>> Start Test Output'
./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 auth_tests.test_validators i18n.sampleproject.old migrations.test_new_module
SWEBENCH_TEST_EXIT_CODE=$?
: '>>>>> End Test Output'
echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"
git checkout aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa tests/auth_tests/fixtures/users.json tests/auth_tests/test_validators.py tests/i18n/sampleproject/old.py
