//! `relab run --junit FILE`: the verdict as a JUnit XML report, for CI
//! systems that show test results (one testsuite per variant, or one for a
//! plain run; one testcase per objective, the target and the observed value
//! in a failure's message). Written with `quick-junit` (nextest's writer).

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use relab_model::status::{ReliabilityExperimentStatus, VerdictResult};

fn failure(kind: &str, message: String) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_type(kind);
    status.set_message(message);
    status
}

/// The report of `name`'s finished status.
pub fn render(name: &str, status: &ReliabilityExperimentStatus) -> String {
    let mut report = Report::new(format!("relab {name}"));
    if status.variants.is_empty() {
        let mut suite = TestSuite::new(name.to_string());
        if let Some(verdict) = &status.verdict {
            for o in &verdict.objectives {
                let outcome = if o.passed {
                    TestCaseStatus::success()
                } else {
                    failure("NotMet", format!("target {}, observed {}", o.target, o.observed))
                };
                let mut case = TestCase::new(o.name.clone(), outcome);
                case.set_classname(name.to_string());
                suite.add_test_case(case);
            }
            if verdict.result == VerdictResult::Inconclusive {
                // every row passed, but the run did not test what it claimed
                let mut case = TestCase::new(
                    "conclusive",
                    failure("Inconclusive", verdict.inconclusive_reasons.join("; ")),
                );
                case.set_classname(name.to_string());
                suite.add_test_case(case);
            }
        }
        report.add_test_suite(suite);
    }
    for v in &status.variants {
        let classname = format!("{name}.{}", v.name);
        let mut suite = TestSuite::new(v.name.clone());
        for o in &v.objectives {
            let i = &o.interval;
            let observed = if i.lower == i.upper {
                format!("{}", i.point)
            } else {
                format!("{} (interval {} to {})", i.point, i.lower, i.upper)
            };
            let outcome = match o.result {
                VerdictResult::Passed => TestCaseStatus::success(),
                VerdictResult::Failed => failure("NotMet", format!("target {}, observed {observed}", o.target)),
                VerdictResult::Inconclusive => failure(
                    "Inconclusive",
                    format!(
                        "target {}, observed {observed}: the interval straddles the target",
                        o.target
                    ),
                ),
            };
            let mut case = TestCase::new(o.name.clone(), outcome);
            case.set_classname(classname.clone());
            suite.add_test_case(case);
        }
        // what the variant was meant to show (an expected failure passes)
        let verdict = v.verdict.map(|r| format!("{r:?}")).unwrap_or_else(|| "none".into());
        let expectation = match v.expectation_met {
            Some(true) => TestCaseStatus::success(),
            _ => failure(
                "ExpectationNotMet",
                format!("expected {:?}, verdict {verdict}", v.expect),
            ),
        };
        let mut case = TestCase::new("expectation", expectation);
        case.set_classname(classname);
        suite.add_test_case(case);
        report.add_test_suite(suite);
    }
    report.to_string().expect("a JUnit report serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use relab_model::stats::Interval;
    use relab_model::status::{IntervalObjective, ObjectiveResult, VariantStatus, Verdict};
    use relab_model::variants::Expectation;

    fn parse(xml: &str) -> junit_parser::TestSuites {
        junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).expect("a JUnit parser reads it")
    }

    #[test]
    fn a_plain_run_is_one_suite_with_a_case_per_objective_and_the_figures_in_failures() {
        let status = ReliabilityExperimentStatus {
            verdict: Some(Verdict {
                result: VerdictResult::Failed,
                objectives: vec![
                    ObjectiveResult {
                        name: "successRatio".into(),
                        target: ">= 0.99".into(),
                        observed: "0.9412".into(),
                        passed: false,
                    },
                    ObjectiveResult {
                        name: "maxDoubleCharges".into(),
                        target: "<= 0".into(),
                        observed: "0".into(),
                        passed: true,
                    },
                ],
                inconclusive_reasons: vec![],
            }),
            ..Default::default()
        };
        let suites = parse(&render("flaky-payments", &status));
        assert_eq!(suites.suites.len(), 1);
        let suite = &suites.suites[0];
        assert_eq!(
            (suite.name.as_str(), suite.tests, suite.failures),
            ("flaky-payments", 2, 1)
        );
        let failed = &suite.cases[0];
        assert_eq!(failed.original_name, "successRatio");
        let junit_parser::TestStatus::Failure(f) = &failed.status else {
            panic!("a failure: {:?}", failed.status)
        };
        assert_eq!(f.message, "target >= 0.99, observed 0.9412");
        assert!(suite.cases[1].status.is_success());
    }

    #[test]
    fn variants_are_suites_and_an_expected_failure_passes_its_expectation() {
        let variant = |name: &str, expect, result, met| VariantStatus {
            name: name.into(),
            expect,
            expectation_met: Some(met),
            verdict: Some(result),
            objectives: vec![IntervalObjective {
                name: "successRatio".into(),
                target: ">= 0.99".into(),
                interval: Interval {
                    lower: 0.95,
                    point: 0.97,
                    upper: 0.995,
                },
                result,
            }],
            ..Default::default()
        };
        let status = ReliabilityExperimentStatus {
            variants: vec![
                variant("with-breaker", Expectation::Passed, VerdictResult::Inconclusive, false),
                variant("no-breaker", Expectation::Failed, VerdictResult::Failed, true),
            ],
            ..Default::default()
        };
        let xml = render("outage-drill", &status);
        let suites = parse(&xml);
        let names: Vec<_> = suites.suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["with-breaker", "no-breaker"]);
        let with = &suites.suites[0];
        let junit_parser::TestStatus::Failure(f) = &with.cases[0].status else {
            panic!("inconclusive is not a pass")
        };
        assert!(f.message.contains("interval 0.95 to 0.995"), "{}", f.message);
        assert_eq!(f.failure_type, "Inconclusive");
        assert!(!with.cases[1].status.is_success(), "the expectation was not met");
        let without = &suites.suites[1];
        assert_eq!(without.cases[1].original_name, "expectation");
        assert!(without.cases[1].status.is_success(), "{xml}");
    }
}
