//! The per-(repo, version) test specifications the eval script is generated from, as data.
//!
//! Generated from `MAP_REPO_VERSION_TO_SPECS_PY` of swebench 4.1.0 (the `test_cmd`, the
//! `install` command the eval script re-runs, and the `eval_commands` run before it), grouping
//! versions that share all three. It covers every Python repository of SWE-bench (the 12 of
//! Verified among them) but `dbt-labs/dbt-core` (no test command) and `swe-bench/humaneval`.
//! Keys the harness defines but the eval script never reads (`python`, `packages`,
//! `pip_packages`, `pre_install`, ...) belong to image building and are left out.
//!
//! Our own fixture repositories are appended: version "0.1", `pytest -rA`, parser `pytest`.

/// One group of versions of one repository sharing a test specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoVersions {
    pub repo: &'static str,
    pub versions: &'static [&'static str],
    /// The command the test directives are appended to.
    pub test_cmd: &'static str,
    /// Re-run by the eval script before the tests, so the model's patch is installed.
    pub install: Option<&'static str>,
    /// Run first, right after `cd /testbed` (django's locale set-up).
    pub eval_commands: &'static [&'static str],
}

/// The test specification of `repo` at `version`, if the harness has one.
pub fn lookup(repo: &str, version: &str) -> Option<&'static RepoVersions> {
    SPECS.iter().find(|g| g.repo == repo && g.versions.contains(&version))
}

/// The harness's `MAP_REPO_TO_PARSER_PY` (plus our fixtures), as short parser names.
pub fn parser_for_repo(repo: &str) -> Option<&'static str> {
    Some(match repo {
        "astropy/astropy" | "scikit-learn/scikit-learn" | "sphinx-doc/sphinx" => "pytest_v2",
        "django/django" => "django",
        "matplotlib/matplotlib" => "matplotlib",
        "mwaskom/seaborn" => "seaborn",
        "psf/requests" | "pydicom/pydicom" | "pylint-dev/pylint" => "pytest_options",
        "sympy/sympy" => "sympy",
        "marshmallow-code/marshmallow"
        | "pallets/flask"
        | "pvlib/pvlib-python"
        | "pydata/xarray"
        | "pylint-dev/astroid"
        | "pytest-dev/pytest"
        | "pyvista/pyvista"
        | "sqlfluff/sqlfluff" => "pytest",
        r if FIXTURE_REPOS.contains(&r) => "pytest",
        _ => return None,
    })
}

/// The repositories of steerbench's own fixture tasks (`docker/`).
pub const FIXTURE_REPOS: [&str; 3] =
    ["steerbench/minicalc", "steerbench/textkit", "steerbench/jsonpath-lite"];

/// Every known (repo, versions) group; searched in order.
pub static SPECS: &[RepoVersions] = &[
    RepoVersions {
        repo: "astropy/astropy",
        versions: &["3.0", "3.1", "3.2", "4.1", "4.2", "4.3", "5.0", "5.1", "5.2", "v5.3"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e .[test] --verbose"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "astropy/astropy",
        versions: &["0.1", "0.2", "0.3", "0.4", "1.1", "1.2", "1.3"],
        test_cmd: "pytest -rA -vv -o console_output_style=classic --tb=no",
        install: Some("python -m pip install -e .[test] --verbose"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "django/django",
        versions: &["1.7", "1.8", "1.10", "1.11", "2.0", "2.1", "2.2"],
        test_cmd: "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
        install: Some("python setup.py install"),
        eval_commands: &[
            "export LANG=en_US.UTF-8",
            "export LC_ALL=en_US.UTF-8",
            "export PYTHONIOENCODING=utf8",
            "export LANGUAGE=en_US:en",
        ],
    },
    RepoVersions {
        repo: "django/django",
        versions: &["1.9"],
        test_cmd: "./tests/runtests.py --verbosity 2",
        install: Some("python setup.py install"),
        eval_commands: &[
            "export LANG=en_US.UTF-8",
            "export LC_ALL=en_US.UTF-8",
            "export PYTHONIOENCODING=utf8",
            "export LANGUAGE=en_US:en",
        ],
    },
    RepoVersions {
        repo: "django/django",
        versions: &["1.4", "1.5", "1.6"],
        test_cmd: "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
        install: Some("python setup.py install"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "django/django",
        versions: &["3.0", "3.1", "3.2"],
        test_cmd: "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
        install: Some("python -m pip install -e ."),
        eval_commands: &[
            "sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen",
            "export LANG=en_US.UTF-8",
            "export LANGUAGE=en_US:en",
            "export LC_ALL=en_US.UTF-8",
        ],
    },
    RepoVersions {
        repo: "django/django",
        versions: &["4.0", "4.1", "4.2", "5.0", "5.1", "5.2"],
        test_cmd: "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "matplotlib/matplotlib",
        versions: &["3.5", "3.6", "3.7", "3.1", "3.2", "3.3", "3.4", "3.0"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "matplotlib/matplotlib",
        versions: &["3.8", "3.9"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install --no-build-isolation -e \".[dev]\""),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "matplotlib/matplotlib",
        versions: &["2.0", "2.1", "2.2", "1.0", "1.1", "1.2", "1.3", "1.4", "1.5"],
        test_cmd: "pytest -rA",
        install: Some("python setup.py build; python setup.py install"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "marshmallow-code/marshmallow",
        versions: &[
            "2.18", "2.19", "2.20", "3.0", "3.1", "3.10", "3.11", "3.12", "3.13", "3.15", "3.16", "3.19",
            "3.2", "3.4", "3.8", "3.9",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e '.[dev]'"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "mwaskom/seaborn",
        versions: &["0.11"],
        test_cmd: "pytest --no-header -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "mwaskom/seaborn",
        versions: &["0.12", "0.13", "0.14"],
        test_cmd: "pytest --no-header -rA",
        install: Some("python -m pip install -e .[dev]"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pallets/flask",
        versions: &["2.0", "2.1", "2.2", "2.3", "3.0", "3.1"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "psf/requests",
        versions: &[
            "0.7", "0.8", "0.9", "0.11", "0.13", "0.14", "1.1", "1.2", "2.0", "2.2", "2.3", "2.4", "2.5",
            "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.17", "2.18", "2.19", "2.22", "2.26", "2.25",
            "2.27", "2.31", "3.0",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pvlib/pvlib-python",
        versions: &["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e .[all]"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pydata/xarray",
        versions: &["0.12", "0.18", "0.19", "0.20", "2022.03", "2022.06", "2022.09", "2023.07", "2024.05"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pydicom/pydicom",
        versions: &["1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "3.0"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pylint-dev/astroid",
        versions: &["2.10", "2.12", "2.13", "2.14", "2.15", "2.16", "2.5", "2.6", "2.7", "2.8", "2.9", "3.0"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pylint-dev/pylint",
        versions: &[
            "2.10", "2.11", "2.13", "2.14", "2.15", "2.16", "2.17", "2.8", "2.9", "3.0", "3.1", "3.2", "3.3",
            "4.0",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pytest-dev/pytest",
        versions: &[
            "4.4", "4.5", "4.6", "5.0", "5.1", "5.2", "5.3", "5.4", "6.0", "6.2", "6.3", "7.0", "7.1", "7.2",
            "7.4", "8.0", "8.1", "8.2", "8.3", "8.4",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "pyvista/pyvista",
        versions: &[
            "0.20", "0.21", "0.22", "0.23", "0.24", "0.25", "0.26", "0.27", "0.28", "0.29", "0.30", "0.31",
            "0.32", "0.33", "0.34", "0.35", "0.36", "0.37", "0.38", "0.39", "0.40", "0.41", "0.42", "0.43",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "scikit-learn/scikit-learn",
        versions: &["0.20", "0.21", "0.22", "1.3", "1.4", "1.5", "1.6"],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -v --no-use-pep517 --no-build-isolation -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "sphinx-doc/sphinx",
        versions: &[
            "1.5", "1.6", "1.7", "1.8", "2.0", "2.1", "2.2", "2.3", "2.4", "3.0", "3.1", "3.2", "3.3", "3.4",
            "3.5", "4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "5.0", "5.1", "5.2", "5.3", "6.0", "6.2", "7.0",
            "7.1", "7.2", "7.3", "7.4", "8.0", "8.1",
        ],
        test_cmd: "tox --current-env -epy39 -v --",
        install: Some("python -m pip install -e .[test]"),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "sqlfluff/sqlfluff",
        versions: &[
            "0.10", "0.11", "0.12", "0.13", "0.4", "0.5", "0.6", "0.8", "0.9", "1.0", "1.1", "1.2", "1.3",
            "1.4", "2.0", "2.1", "2.2",
        ],
        test_cmd: "pytest -rA",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "sympy/sympy",
        versions: &[
            "0.7", "1.0", "1.1", "1.10", "1.11", "1.12", "1.2", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9",
            "1.13", "1.14",
        ],
        test_cmd: "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose",
        install: Some("python -m pip install -e ."),
        eval_commands: &[],
    },
    RepoVersions {
        repo: "steerbench/minicalc",
        versions: &["0.1"],
        test_cmd: "pytest -rA",
        install: None,
        eval_commands: &[],
    },
    RepoVersions {
        repo: "steerbench/textkit",
        versions: &["0.1"],
        test_cmd: "pytest -rA",
        install: None,
        eval_commands: &[],
    },
    RepoVersions {
        repo: "steerbench/jsonpath-lite",
        versions: &["0.1"],
        test_cmd: "pytest -rA",
        install: None,
        eval_commands: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_commands_match_the_reference_table() {
        let django = lookup("django/django", "3.0").unwrap();
        assert_eq!(django.test_cmd, "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1");
        assert_eq!(django.install, Some("python -m pip install -e ."));
        assert_eq!(django.eval_commands.len(), 4);
        assert_eq!(lookup("django/django", "1.9").unwrap().test_cmd, "./tests/runtests.py --verbosity 2");
        assert_eq!(lookup("django/django", "2.2").unwrap().install, Some("python setup.py install"));
        assert_eq!(
            lookup("sympy/sympy", "1.12").unwrap().test_cmd,
            "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose"
        );
        assert_eq!(lookup("sphinx-doc/sphinx", "7.2").unwrap().test_cmd, "tox --current-env -epy39 -v --");
        assert_eq!(
            lookup("astropy/astropy", "1.3").unwrap().test_cmd,
            "pytest -rA -vv -o console_output_style=classic --tb=no"
        );
        assert_eq!(lookup("astropy/astropy", "5.1").unwrap().test_cmd, "pytest -rA");
        assert_eq!(lookup("mwaskom/seaborn", "0.12").unwrap().test_cmd, "pytest --no-header -rA");
        assert_eq!(
            lookup("scikit-learn/scikit-learn", "0.22").unwrap().install,
            Some("python -m pip install -v --no-use-pep517 --no-build-isolation -e .")
        );
        assert_eq!(lookup("psf/requests", "2.27").unwrap().install, Some("python -m pip install ."));
        for repo in FIXTURE_REPOS {
            assert_eq!(lookup(repo, "0.1").unwrap().test_cmd, "pytest -rA");
            assert_eq!(parser_for_repo(repo), Some("pytest"));
        }
        assert!(lookup("django/django", "9.9").is_none());
    }

    #[test]
    fn every_verified_repo_version_is_known() {
        // the versions of the 500 SWE-bench Verified rows, per shared/reference/swebench.md §4 (ranges expanded)
        let verified: [(&str, &[&str]); 12] = [
            ("django/django", &["1.11", "2.2", "3.0", "3.1", "3.2", "4.0", "4.1", "4.2", "5.0"]),
            (
                "sympy/sympy",
                &["1.0", "1.1", "1.2", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9", "1.10", "1.11", "1.12"],
            ),
            (
                "sphinx-doc/sphinx",
                &[
                    "3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "4.0", "4.1", "4.2", "4.3", "4.4", "5.0",
                    "5.1", "5.2", "7.1", "7.2",
                ],
            ),
            ("matplotlib/matplotlib", &["3.0", "3.1", "3.4", "3.5", "3.6", "3.7"]),
            ("scikit-learn/scikit-learn", &["0.20", "0.21", "0.22", "1.3"]),
            ("astropy/astropy", &["1.3", "3.1", "4.3", "5.0", "5.1", "5.2"]),
            ("pydata/xarray", &["0.12", "2022.03", "2022.06", "2022.09"]),
            (
                "pytest-dev/pytest",
                &["4.5", "4.6", "5.0", "5.1", "5.2", "5.3", "5.4", "6.0", "6.2", "6.3", "7.0", "7.1", "7.2"],
            ),
            ("pylint-dev/pylint", &["2.9", "2.10", "2.14", "2.15", "3.0"]),
            ("psf/requests", &["1.1", "2.0", "2.3", "2.4", "2.9", "2.26", "2.27"]),
            ("mwaskom/seaborn", &["0.12"]),
            ("pallets/flask", &["2.3"]),
        ];
        for (repo, versions) in verified {
            for version in versions {
                assert!(lookup(repo, version).is_some(), "{repo} {version}");
            }
        }
    }

    #[test]
    fn every_repo_with_specs_has_a_parser() {
        for group in SPECS {
            assert!(parser_for_repo(group.repo).is_some(), "{}", group.repo);
        }
    }
}
