//! The README's examples stay true: its config snippets load, and the rules API example is a
//! rule the node accepts. A README a new user copies from must not drift from the code.

use edgemirror_node::config::Config;
use edgemirror_node::netguard::AddressPolicy;
use edgemirror_node::rules::{self, BackSourceBody};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// The fenced blocks of the given language, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    text.split(&fence).skip(1).map(|rest| rest.split("```").next().unwrap_or_default().to_string()).collect()
}

#[test]
fn readme_config_examples_load() {
    let text = readme();
    let configs: Vec<String> =
        blocks(&text, "toml").into_iter().filter(|b| b.contains("[[buckets]]") || b.contains("[s3]")).collect();
    assert!(!configs.is_empty(), "no config example with [[buckets]] in the README");
    for config in configs {
        Config::from_toml(&config).unwrap_or_else(|e| panic!("README config example does not load: {e:#}\n{config}"));
    }
}

#[test]
fn readme_rules_api_example_is_accepted() {
    let text = readme();
    let curl = blocks(&text, "sh").into_iter().find(|b| b.contains("backSource")).expect("the rules API example");
    let json = curl.split("-d '").nth(1).and_then(|rest| rest.split('\'').next()).expect("a -d '...' body");
    let body: BackSourceBody = serde_json::from_str(json).unwrap_or_else(|e| panic!("README rule JSON: {e}\n{json}"));
    let policy = AddressPolicy::new(&[], &[]).with_allow_private(true);
    rules::validate_list(&body.back_source_rules, &policy).unwrap_or_else(|e| panic!("README rule refused: {e}"));
    assert!(curl.contains("TOKEN="), "the example sets the token it uses");
}
