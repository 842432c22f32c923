//! One suite, several stores: each test is an async fn over a subject,
//! run on the in-process store (`local()`), on Redis (`shared(1)`) and on
//! two handles of one Redis (`shared(2)`, named by the caller). `shared`
//! returns `None` where no `redis-server` could start (and says so).

macro_rules! suite {
    ($two:ident; $($test:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::local().unwrap()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(subject) = super::shared(1) else { return };
                    super::$test(subject).await;
                }
            )*
        }
        mod $two {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(subject) = super::shared(2) else { return };
                    super::$test(subject).await;
                }
            )*
        }
    };
}
