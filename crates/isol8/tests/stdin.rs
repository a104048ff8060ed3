//! Standard input through the library against a real Docker daemon: a buffered or
//! streamed run reads the request's `stdin` and then end-of-file (at once without one);
//! an interactive run reads the request's `stdin`, then what its controller sends, until
//! the controller closes it; and a program that prints 600 kB before it reads 120 kB
//! gets all of both on every path.

use futures_util::StreamExt;
use isol8::{Engine, EngineOptions, StreamEvent};
use isol8_testkit::{
    assert_big_output, assert_clean, big_input, code, engine, feed, interactive_both, run,
    stdout_and_exit, BIG_IO_CODE, INPUT, STDIN_CASES,
};

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn buffered_and_streamed_runs_read_the_request_stdin_then_end_of_file() {
    let engine = engine(EngineOptions::default()).await;
    for case in STDIN_CASES {
        for (stdin, want) in [(Some(INPUT), case.with_input), (None, case.without_input)] {
            let mut req = code(case.runtime, case.code);
            req.stdin = stdin.map(str::to_string);
            let r = run(&engine, req.clone()).await;
            assert_eq!(
                (r.stdout.as_str(), r.exit_code),
                (want, 0),
                "{} buffered, stdin {stdin:?}: {r:?}",
                case.name
            );
            let events: Vec<StreamEvent> = engine
                .execute_stream(req)
                .await
                .expect("stream")
                .collect()
                .await;
            assert_eq!(
                stdout_and_exit(&events),
                (want.to_string(), Some("0".into())),
                "{} streamed, stdin {stdin:?}",
                case.name
            );
        }
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn interactive_runs_read_the_request_stdin_then_the_controller_until_it_closes() {
    let engine = engine(EngineOptions::default()).await;
    let (first, rest) = INPUT.split_at(INPUT.find('\n').expect("two lines") + 1);
    for case in STDIN_CASES {
        let mut req = code(case.runtime, case.code);
        req.stdin = Some(first.to_string());
        let (streamed, r) = interactive_both(&engine, req, rest).await;
        assert_eq!(
            streamed,
            (case.with_input.to_string(), Some("0".into())),
            "{} interactive",
            case.name
        );
        // The buffered form: the whole result, fed the same way.
        assert_eq!(
            (r.stdout.as_str(), r.exit_code),
            (case.with_input, 0),
            "{} interactive buffered: {r:?}",
            case.name
        );
        assert!(r.container_id.is_some(), "a full result: {r:?}");
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_printing_600_kb_before_reading_120_kb_of_stdin_gets_all_of_both() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code("python", BIG_IO_CODE);
    req.stdin = Some(big_input());
    let r = run(&engine, req.clone()).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert!(!r.truncated);
    assert_big_output(&r.stdout, "buffered");

    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    let (out, exit) = stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "streamed");

    // Interactive: the input arrives in chunks while the output is being relayed.
    let (events, controller) = engine
        .execute_interactive(code("python", BIG_IO_CODE), &EngineOptions::default())
        .await
        .expect("start");
    let input = big_input();
    let (events, ()) = tokio::join!(events.collect::<Vec<_>>(), feed(&controller, &input));
    let (out, exit) = stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "interactive");

    let (result, controller) = engine
        .execute_interactive_buffered(code("python", BIG_IO_CODE), &EngineOptions::default())
        .await
        .expect("start");
    let (r, ()) = tokio::join!(result, feed(&controller, &input));
    let r = r.expect("result");
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_big_output(&r.stdout, "interactive buffered");
    assert_clean(&engine).await;
}
