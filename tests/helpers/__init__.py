"""What several test files share: the app under AppTest (apptest), runs written or trained for a test
(finished_runs), and the real-browser set-up (browser). Not collected: no file here is named test_*."""
