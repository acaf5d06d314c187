#!/usr/bin/env python3
"""Checks of deploy/ that need no cluster and no container runtime.

- Kubernetes: every overlay renders with kubectl's kustomize; every rendered object of a core
  kind validates strictly against the Kubernetes 1.32 schemas (kubernetes-validate, from the
  project's virtual environment); the objects fit together (selectors, ports, probes, the HPA's
  target and metric, the grace period against the drain) and the server accepts the container's
  arguments with the rendered configuration (vlcache-server --check-config).
- Monitoring: promtool checks and unit-tests the rules; the PrometheusRule and the dashboard are
  up to date with their sources.
- Image: every shared library the built server resolves comes from a package the CPU image's
  runtime stage installs, or from what those packages depend on.

Run by ctest (tests/CMakeLists.txt) with VLC_BIN_DIR and VLC_VENV set; each check is a test case.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
MON = os.path.join(DEPLOY, "monitoring")
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
VENV = os.environ.get("VLC_VENV", os.path.join(ROOT, "build", "venv"))
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ["cpu", "gpu"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def render(path):
    r = run(["kubectl", "kustomize", path])
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind):
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def with_component(overlay, component):
    """A temporary overlay: `overlay` plus one of deploy/kubernetes/components."""
    d = tempfile.mkdtemp(prefix="vlcache-kustomize-")
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": "vlcache",
            "resources": [os.path.relpath(os.path.join(K8S, "overlays", overlay), d)],
            "components": [os.path.relpath(os.path.join(K8S, "components", component), d)],
        }, f)
    return d


class Kubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("kubectl") is None:
            raise AssertionError("kubectl (with kustomize) is needed to render deploy/kubernetes")
        cls.rendered = {o: render(os.path.join(K8S, "overlays", o)) for o in OVERLAYS}
        for component in ("inference-pool", "session-store"):
            d = with_component("cpu", component)
            try:
                cls.rendered["cpu+" + component] = render(d)
            finally:
                shutil.rmtree(d)

    def test_overlays_render_the_expected_objects(self):
        for name, objs in self.rendered.items():
            kinds = sorted(o["kind"] for o in objs)
            for kind in ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "PrometheusRule", "Service", "ServiceMonitor"]:
                self.assertIn(kind, kinds, name)
            self.assertEqual(len({o["metadata"].get("namespace") for o in objs}), 1, name)
        self.assertIn("InferencePool", [o["kind"] for o in self.rendered["cpu+inference-pool"]])
        # The session store: a shared claim, mounted, and named to the server.
        store = self.rendered["cpu+session-store"]
        pvc = one(store, "PersistentVolumeClaim")
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteMany"])
        pod = one(store, "Deployment")["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        self.assertEqual(claims, {"sessions": pvc["metadata"]["name"]})
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        self.assertEqual(env["VLC_SESSION_STORE"], mounts["sessions"])
        gpu = one(self.rendered["gpu"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(gpu["resources"]["limits"]["nvidia.com/gpu"], "1")
        self.assertIn("--device=cuda", gpu["args"])

    def test_core_objects_validate_strictly(self):
        tool = os.path.join(VENV, "bin", "kubernetes-validate")
        self.assertTrue(os.path.exists(tool), f"{tool} is missing: make deps creates {VENV}")
        custom = {"PrometheusRule", "ServiceMonitor", "InferencePool"}
        for name, objs in self.rendered.items():
            core = [o for o in objs if o["kind"] not in custom]
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                yaml.safe_dump_all(core, f)
            try:
                r = run([tool, "--strict", "-k", KUBERNETES_VERSION, "--quiet", f.name])
            finally:
                os.unlink(f.name)
            self.assertEqual(r.returncode, 0, f"{name}:\n{r.stdout}{r.stderr}")
            # A kind the tool has no schema for would pass with a warning: none may.
            self.assertNotIn("Couldn't find schema", r.stdout + r.stderr, name)

    def test_custom_resources_have_the_fields_their_operators_read(self):
        # No schemas for these kinds here (they come with their operators' CRDs): check the
        # fields this deployment relies on.
        for name, objs in self.rendered.items():
            sm = one(objs, "ServiceMonitor")
            self.assertEqual(sm["apiVersion"], "monitoring.coreos.com/v1")
            ports = {p["name"] for p in one(objs, "Service")["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                self.assertIn(ep["port"], ports, name)
                self.assertEqual(ep["path"], "/metrics")
            rule = one(objs, "PrometheusRule")
            self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
            with open(os.path.join(MON, "rules.yaml")) as f:
                self.assertEqual(rule["spec"]["groups"], yaml.safe_load(f)["groups"], name)
        pool = one(self.rendered["cpu+inference-pool"], "InferencePool")
        self.assertEqual(pool["apiVersion"], "inference.networking.k8s.io/v1")
        for field in ["selector", "targetPorts", "endpointPickerRef"]:
            self.assertIn(field, pool["spec"])

    def test_selectors_ports_and_targets_resolve(self):
        for name, objs in self.rendered.items():
            dep = one(objs, "Deployment")
            pod_labels = dep["spec"]["template"]["metadata"]["labels"]
            container = dep["spec"]["template"]["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}

            def selects(selector, labels, what):
                self.assertTrue(selector, f"{name}: {what} has an empty selector")
                for k, v in selector.items():
                    self.assertEqual(labels.get(k), v, f"{name}: {what} selects {k}={v}")

            self.assertEqual(dep["spec"]["selector"]["matchLabels"],
                             {k: pod_labels[k] for k in dep["spec"]["selector"]["matchLabels"]})
            svc = one(objs, "Service")
            selects(svc["spec"]["selector"], pod_labels, "the Service")
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, f"{name}: Service port {p['name']}")
            grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
            self.assertEqual(grpc_port["appProtocol"], "kubernetes.io/h2c")
            selects(one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels,
                    "the PodDisruptionBudget")
            selects(one(objs, "ServiceMonitor")["spec"]["selector"]["matchLabels"],
                    svc["metadata"]["labels"], "the ServiceMonitor")
            for pool in by_kind(objs, "InferencePool"):
                selects(pool["spec"]["selector"]["matchLabels"], pod_labels, "the InferencePool")
                for tp in pool["spec"]["targetPorts"]:
                    self.assertIn(tp["number"], ports.values())
            hpa = one(objs, "HorizontalPodAutoscaler")
            ref = hpa["spec"]["scaleTargetRef"]
            self.assertEqual((ref["apiVersion"], ref["kind"], ref["name"]),
                             (dep["apiVersion"], dep["kind"], dep["metadata"]["name"]), name)
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
                port = container[probe]["grpc"]["port"]
                self.assertIn(port, ports.values(), f"{name}: {probe} port {port}")
            self.assertEqual(container["livenessProbe"]["grpc"].get("service"), "liveness")

    def test_security_context_and_resources(self):
        for name, objs in self.rendered.items():
            spec = one(objs, "Deployment")["spec"]["template"]["spec"]
            self.assertTrue(spec["securityContext"]["runAsNonRoot"], name)
            self.assertGreater(spec["securityContext"]["runAsUser"], 0, name)
            c = spec["containers"][0]
            sc = c["securityContext"]
            self.assertFalse(sc["allowPrivilegeEscalation"], name)
            self.assertTrue(sc["readOnlyRootFilesystem"], name)
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], name)
            self.assertIn("memory", c["resources"]["requests"], name)
            self.assertIn("cpu", c["resources"]["requests"], name)
            self.assertIn("memory", c["resources"]["limits"], name)
            # A read-only root: every path the server writes is a volume.
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            config = self.server_config(objs)
            self.assertIn(os.path.dirname(config["dq_db"]), mounts, name)
            self.assertIn("/tmp", mounts, name)

    @staticmethod
    def server_config(objs):
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and "server.yaml" in o.get("data", {}))
        return yaml.safe_load(cm["data"]["server.yaml"])

    def test_grace_period_covers_prestop_and_drain(self):
        for name, objs in self.rendered.items():
            spec = one(objs, "Deployment")["spec"]["template"]["spec"]
            c = spec["containers"][0]
            pre = c["lifecycle"]["preStop"]["exec"]["command"]
            self.assertEqual(pre[0], "/bin/sleep")
            drain = float(self.server_config(objs)["drain_timeout"])
            for a in c["args"]:
                if a.startswith("--drain-timeout="):
                    drain = float(a.split("=", 1)[1])
            self.assertGreater(spec["terminationGracePeriodSeconds"], float(pre[1]) + drain, name)

    def test_the_server_accepts_the_container_arguments(self):
        server = os.path.join(BIN, "vlcache-server")
        self.assertTrue(os.path.exists(server), server)
        for name, objs in self.rendered.items():
            c = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "server.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(self.server_config(objs), f)
                args = [a if not a.startswith("--config=") else f"--config={path}" for a in c["args"]]
                env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
                r = run([server, "--check-config"] + args, env=env)
            self.assertEqual(r.returncode, 0, f"{name}: {shlex.join(args)}\n{r.stderr}")
            self.assertIn("configuration valid", r.stdout)
            # The file's settings arrived (not the defaults).
            self.assertRegex(r.stdout, r"drain_timeout: 45\S*  # config file")
            r = run([server, "--check-config", "--drain-timeout=-1"], env=env)
            self.assertEqual(r.returncode, 2)

    def test_the_autoscaler_metric_is_served_by_the_adapter_rule(self):
        with open(os.path.join(MON, "prometheus-adapter.yaml")) as f:
            adapter = yaml.safe_load(f)
        served = {}
        for rule in adapter["rules"]["custom"]:
            series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
            served[rule["name"]["as"]] = series
            self.assertEqual(set(rule["resources"]["overrides"]), {"namespace", "pod"})
        for name, objs in self.rendered.items():
            for m in one(objs, "HorizontalPodAutoscaler")["spec"]["metrics"]:
                self.assertEqual(m["type"], "Pods")
                self.assertIn(m["pods"]["metric"]["name"], served, name)
        # The series exist in the server (the end-to-end test scrapes them; here, by name).
        with open(os.path.join(ROOT, "server", "metrics.cc")) as f:
            source = f.read()
        for series in served.values():
            self.assertIn(f'"{series}"', source)


class Monitoring(unittest.TestCase):
    def test_promtool_checks_and_unit_tests_the_rules(self):
        if shutil.which("promtool") is None:
            raise AssertionError("promtool (Debian's prometheus package) is needed")
        r = run(["promtool", "check", "rules", os.path.join(MON, "rules.yaml")])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run(["promtool", "test", "rules", "rules_test.yaml"], cwd=MON)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_generated_files_are_up_to_date(self):
        for script in ["make_prometheusrule.py", "make_dashboard.py"]:
            r = run([sys.executable, os.path.join(MON, script), "--check"])
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_dashboard_panels_have_queries(self):
        with open(os.path.join(MON, "dashboard.json")) as f:
            dash = json.load(f)
        self.assertEqual(dash["uid"], "vlcache")
        self.assertGreaterEqual(len(dash["panels"]), 10)
        for p in dash["panels"]:
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertIn("vlcache_", t["expr"], p["title"])


def dependency_closure(roots):
    """The installed packages `roots` depend on (Depends, Pre-Depends), recursively."""
    r = run(["dpkg-query", "-W", "-f", "${Package}\t${Provides}\t${Depends}, ${Pre-Depends}\n"])
    deps, provides = {}, {}
    for line in r.stdout.splitlines():
        pkg, prov, dep = (line.split("\t") + ["", ""])[:3]
        deps[pkg] = dep
        for p in prov.split(","):
            p = p.strip().split(" ")[0]
            if p:
                provides.setdefault(p, []).append(pkg)
    seen, todo = set(), list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for clause in deps.get(pkg, "").split(","):
            for alt in clause.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if not name:
                    continue
                found = [name] if name in deps else provides.get(name, [])
                if found:
                    todo.extend(found)
                    break
    return seen


class Image(unittest.TestCase):
    def check_recipe(self, name, cuda_flag):
        """Two stages; the first runs the project's set-up and build with `cuda_flag`; the
        runtime stage installs from runtime-packages.txt (no compiler, no -dev package), runs as a
        numeric non-root user, keeps its writable paths in volumes, holds the demo model and
        starts the server. Returns the two stages' text."""
        with open(os.path.join(DEPLOY, "docker", name)) as f:
            text = f.read()
        stages = re.split(r"(?m)^FROM ", text)[1:]
        self.assertEqual(len(stages), 2, name)
        build, runtime = stages
        self.assertIn("./scripts/install-deps.sh", build)
        self.assertIn("make build", build)
        self.assertIn(cuda_flag, build)
        self.assertIn("runtime-packages.txt", runtime)
        self.assertNotRegex(runtime, r"-dev\b|build-essential|g\+\+|gcc|cmake|nvcc|cuda-toolkit")
        self.assertRegex(runtime, r"(?m)^USER 65532:65532$")
        self.assertIn('VOLUME ["/var/lib/vlcache", "/tmp"]', runtime)
        self.assertRegex(runtime, r'(?m)^ENTRYPOINT \["/usr/local/bin/vlcache-server"\]$')
        self.assertIn("COPY models/demo /opt/vlcache/models/demo", runtime)
        return build, runtime

    def test_the_cpu_image_recipe(self):
        # No container runtime here: check what the recipe says.
        self.check_recipe("Dockerfile.cpu", "-DVLC_WITH_CUDA=OFF")
        with open(os.path.join(DEPLOY, "docker", "runtime-packages.txt")) as f:
            for line in f:
                self.assertFalse(line.strip().endswith("-dev"), line)

    def test_the_cuda_image_recipe(self):
        # The kernels built against PyTorch's LibTorch, found as scripts/device-check.sh finds it,
        # for the image the GPU overlay names.
        build, runtime = self.check_recipe("Dockerfile.cuda", "-DVLC_WITH_CUDA=ON")
        self.assertIn("torch.utils.cmake_prefix_path", build)
        with open(os.path.join(ROOT, "scripts", "device-check.sh")) as f:
            self.assertIn("torch.utils.cmake_prefix_path", f.read())
        self.assertIn("VLC_DEVICE=cuda", runtime)
        with open(os.path.join(K8S, "overlays", "gpu", "kustomization.yaml")) as f:
            gpu = yaml.safe_load(f)
        self.assertEqual(gpu["images"][0]["newTag"], "cuda")

    def test_every_library_of_the_server_comes_from_a_runtime_package(self):
        server = os.path.join(BIN, "vlcache-server")
        with open(os.path.join(DEPLOY, "docker", "runtime-packages.txt")) as f:
            runtime = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        closure = dependency_closure(runtime)
        for pkg in runtime:
            self.assertIn(pkg, closure)
        libs = []
        for line in run(["ldd", server]).stdout.splitlines():
            m = re.match(r"\s*(\S+) => (\S+)", line)
            if m:
                self.assertNotEqual(m.group(2), "not", f"{m.group(1)} does not resolve")
                libs.append(m.group(2))
        self.assertGreater(len(libs), 10)
        # Which package owns each file, from dpkg's lists in one pass (a file may be listed under
        # /lib or /usr/lib, and by its link name or its real name).
        owners = {}
        info = "/var/lib/dpkg/info"
        for name in os.listdir(info):
            if name.endswith(".list"):
                pkg = name[:-len(".list")].split(":")[0]
                with open(os.path.join(info, name), errors="replace") as f:
                    for path in f:
                        owners.setdefault(path.rstrip("\n"), pkg)
        missing = []
        for lib in libs:
            real = os.path.realpath(lib)
            # The CUDA runtime comes with the CUDA image's base, not from Debian: the CPU image
            # builds without CUDA (VLC_WITH_CUDA=OFF), so its server does not link it.
            if "/cuda" in real:
                continue
            candidates = [lib, real] + ["/usr" + p for p in (lib, real) if p.startswith("/lib/")]
            owner = next((owners[p] for p in candidates if p in owners), None)
            if owner is None or owner not in closure:
                missing.append(f"{lib} ({owner or 'no package'})")
        self.assertEqual(missing, [], "libraries outside the runtime stage's packages")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=10):
    import urllib.request
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


class EndToEnd(unittest.TestCase):
    """A real Prometheus scrapes a real vlcache-server while vlcache-loadtest runs against it; then
    every dashboard query (its variables substituted) and every recording rule runs through
    Prometheus's HTTP API and must return data, so a renamed or missing metric fails here."""

    @classmethod
    def setUpClass(cls):
        import time
        import urllib.parse
        cls.quote = staticmethod(urllib.parse.quote)
        cls.dir = tempfile.mkdtemp(prefix="vlcache-e2e-")
        cls.procs = []
        try:
            model = os.path.join(cls.dir, "model")
            subprocess.run([os.path.join(BIN, "vlcache-make-tiny"), "--out", model, "--seed", "1"],
                           check=True, capture_output=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
            server = subprocess.Popen(
                [os.path.join(BIN, "vlcache-server"), "--model", model, "--listen", "127.0.0.1:0",
                 "--metrics-listen", "127.0.0.1:0", "--log-level", "warn",
                 "--dq-db", os.path.join(cls.dir, "dq.sqlite"), "--max-sessions", "2"],
                stdout=subprocess.PIPE, text=True, env=env)
            cls.procs.append(server)
            fields = {}
            for line in server.stdout:
                if line.startswith("listening "):
                    fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
                    break
            if not fields:
                raise AssertionError("vlcache-server did not start")
            cls.target, cls.metrics = fields["grpc"], fields["metrics"]
            port = free_port()
            cls.prom = f"http://127.0.0.1:{port}"
            config = os.path.join(cls.dir, "prometheus.yml")
            with open(config, "w") as f:
                yaml.safe_dump({
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [os.path.join(MON, "rules.yaml")],
                    "scrape_configs": [{"job_name": "vlcache",
                                        "static_configs": [{"targets": [cls.metrics]}]}],
                }, f)
            prom = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.tsdb.path={os.path.join(cls.dir, 'tsdb')}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cls.procs.append(prom)
            for _ in range(300):
                try:
                    if http_json(f"{cls.prom}/api/v1/status/buildinfo")["status"] == "success":
                        break
                except OSError:
                    time.sleep(0.1)
            # Real traffic: pictures, and sessions (more than --max-sessions, so some are
            # evicted), for a few seconds.
            subprocess.run(
                [os.path.join(BIN, "vlcache-loadtest"), "--target", cls.target, "--no-progress",
                 "--workload", "image:3,session:1", "--rate", "8", "--duration", "6",
                 "--concurrency", "6", "--max-new-tokens", "8"],
                check=True, capture_output=True, timeout=300)
            # Enough scrapes after the traffic for every rate() to see it.
            for _ in range(200):
                r = cls.query('count_over_time(up{job="vlcache"}[1m])')
                if r and float(r[0]["value"][1]) >= 12:
                    break
                time.sleep(0.25)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def query(cls, expr):
        r = http_json(f"{cls.prom}/api/v1/query?query={cls.quote(expr)}")
        if r["status"] != "success":
            raise AssertionError(f"{expr}: {r}")
        return r["data"]["result"]

    def test_every_dashboard_query_returns_data(self):
        with open(os.path.join(MON, "dashboard.json")) as f:
            dash = json.load(f)
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                # label_values(SELECTOR, LABEL): the values Grafana offers; in PromQL,
                # group by (LABEL) (SELECTOR).
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
                self.assertIsNotNone(m, var["query"]["query"])
                expr = f"group by ({m.group(2)}) ({m.group(1).replace('$job', 'vlcache')})"
                self.assertTrue(self.query(expr), f"variable {var['name']}: no values")
        for panel in dash["panels"]:
            for t in panel["targets"]:
                expr = (t["expr"].replace("$job", "vlcache").replace("$instance", ".*")
                        .replace("$__rate_interval", "1m"))
                self.assertTrue(self.query(expr), f"{panel['title']}: no data for {expr}")

    def test_every_recording_rule_returns_data_and_every_rule_loads(self):
        with open(os.path.join(MON, "rules.yaml")) as f:
            groups = yaml.safe_load(f)["groups"]
        for g in groups:
            for rule in g["rules"]:
                result = self.query(rule["expr"])  # an alert's may be empty; it must run
                if "record" in rule:
                    self.assertTrue(result, f"{rule['record']}: no data")
        loaded = http_json(f"{self.prom}/api/v1/rules")["data"]["groups"]
        self.assertEqual(sum(len(g["rules"]) for g in loaded),
                         sum(len(g["rules"]) for g in groups))
        for g in loaded:
            for rule in g["rules"]:
                self.assertEqual(rule["health"], "ok", rule)


if __name__ == "__main__":
    unittest.main(verbosity=2)
