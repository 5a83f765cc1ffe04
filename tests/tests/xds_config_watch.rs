//! xds-ext's directory watch, through its own counters: a valid edit next
//! to bad files reads and parses the edited file only (a refused 10 MB file
//! and a file that does not parse are not read again), and each error is
//! counted once, however many loads find it. Counts, not timings. About 2 s.

use std::time::Duration;

use switchyard_tests::xds_ext::{bookinfo, write, XdsExt};

struct Counters {
    reloads: f64,
    read: f64,
    parsed: f64,
    errors: f64,
}

async fn counters(xds: &XdsExt) -> Counters {
    Counters {
        reloads: xds.metric("xds_ext_config_reloads_total").await,
        read: xds.metric("xds_ext_config_files_read_total").await,
        parsed: xds.metric("xds_ext_config_files_parsed_total").await,
        errors: xds.metric("xds_ext_config_reload_errors_total").await,
    }
}

#[tokio::test]
async fn a_valid_edit_beside_bad_files_reads_only_itself_and_counts_no_error_again() {
    let reviews = bookinfo("virtual-service-reviews-test-v2.yaml");
    let dir = XdsExt::config_dir(&[("reviews.yaml", &reviews), ("broken.yaml", "kind: [unclosed\n")]);
    let oversized = std::fs::File::create(dir.path().join("oversized.yaml")).unwrap_or_else(|e| panic!("{e}"));
    oversized.set_len(10 << 20).unwrap_or_else(|e| panic!("{e}"));
    // A file read within 50 ms of a change is read once more to be sure;
    // files this old are not, so the counts below are exact.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let modules = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let xds = XdsExt::start_with_args(dir.path(), "127.0.0.1:0", modules.path(), &[]).await;

    let start = counters(&xds).await;
    assert_eq!(start.errors, 2.0, "the file that does not parse and the oversized one:\n{}", xds.log());
    assert_eq!(start.read, 4.0, "services, destination rules, reviews, broken: not the oversized file");
    assert_eq!(start.parsed, 4.0);

    let mut generation = xds.json("/debug/config").await["generation"].as_u64().unwrap_or(0);
    for (i, subset) in ["v3", "v1", "v3"].into_iter().enumerate() {
        write(dir.path(), "reviews.yaml", &reviews.replace("subset: v2", &format!("subset: {subset}")));
        generation = xds.wait_generation(generation).await;
        let now = counters(&xds).await;
        let edits = (i + 1) as f64;
        assert_eq!(now.read - start.read, edits, "edit {edits}: reviews.yaml alone read:\n{}", xds.log());
        assert_eq!(now.parsed - start.parsed, edits, "edit {edits}: reviews.yaml alone parsed");
        assert_eq!(now.errors, start.errors, "edit {edits}: the bad files' errors are not counted again");
        assert!(now.reloads > start.reloads);
    }

    // A new error counts; an old one that goes and one that stays do not.
    write(dir.path(), "broken.yaml", "kind: Service\nmetadata: {name: x\n");
    xds.wait_generation(generation).await;
    let now = counters(&xds).await;
    assert_eq!(now.errors, start.errors + 1.0, "one new error (the old one went):\n{}", xds.log());
    assert_eq!(now.parsed - start.parsed, 4.0);
}
