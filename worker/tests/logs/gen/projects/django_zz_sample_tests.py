import sys
import unittest

from django.test import SimpleTestCase, TestCase


class SampleTests(SimpleTestCase):
    def test_pass(self):
        self.assertEqual(1 + 1, 2)

    def test_fail(self):
        self.assertEqual([1, 2], [1, 3])

    def test_error(self):
        raise ValueError("boom")

    @unittest.skip("not today")
    def test_skipped(self):
        pass

    @unittest.expectedFailure
    def test_expected_failure(self):
        self.assertTrue(False)

    @unittest.expectedFailure
    def test_unexpected_success(self):
        self.assertTrue(True)

    def test_docstring(self):
        """
        First line of the docstring is shown instead.
        """
        self.assertTrue(True)

    def test_noisy_stderr(self):
        sys.stderr.write("some noise on stderr\n")
        self.assertTrue(True)

    def test_noisy_stdout(self):
        print("printed to stdout", flush=True)
        self.assertTrue(True)

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)


class DatabaseTests(TestCase):
    def test_db_pass(self):
        self.assertTrue(True)

    def test_db_skip_runtime(self):
        self.skipTest("runtime skip")
