//! Reading Istio, Kubernetes and Switchyard documents: every kind, deprecated
//! and unapplied fields, and errors that name file, line, document and field.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load_one, render, warnings, workload};
use xds_ext::config::model::Kind;

const EVERY_KIND: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [mesh]
  exportTo: ["*"]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
      uri: {prefix: /reviews}
      ignoreUriCase: true
      method: {exact: GET}
      queryParams: {v: {regex: "[0-9]+"}}
      withoutHeaders: {x-debug: {}}
      port: 9080
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      headers: {request: {set: {x-version: v2}}}
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}
    headers: {response: {remove: [x-internal]}}
  - route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{port: 9080, name: http}]
---
apiVersion: switchyard.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: sticky, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: productpage}}
  hosts: [reviews]
  http:
  - sticky: {cookie: session}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#;

#[test]
fn every_kind_is_read_without_problems() {
    let (store, problems) = load_one(EVERY_KIND);
    assert!(problems.is_empty(), "{problems:#?}");
    let kinds: Vec<Kind> = store.documents().iter().map(|d| d.key.kind).collect();
    for kind in [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::Service,
        Kind::TrafficPolicy,
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(store.documents().iter().all(|d| d.key.namespace == "shop"));
}

#[test]
fn every_apiversion_of_istio_is_accepted_and_others_are_not() {
    for version in ["v1alpha3", "v1beta1", "v1"] {
        let yaml = format!(
            "apiVersion: networking.istio.io/{version}\nkind: DestinationRule\nmetadata: {{name: r}}\nspec: {{host: r}}\n"
        );
        let (store, problems) = load_one(&yaml);
        assert!(problems.is_empty(), "{version}: {problems:#?}");
        assert_eq!(store.documents().len(), 1);
    }
    let (_, problems) =
        load_one("apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: r}\n");
    assert_eq!(errors(&problems), ["test.yaml:1: apiVersion: unsupported apiVersion \"networking.istio.io/v2\" (use networking.istio.io/v1, v1beta1 or v1alpha3)"]);
}

#[test]
fn other_kinds_are_ignored_with_a_warning() {
    let (store, problems) = load_one(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews-v1}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n",
    );
    assert!(store.documents().is_empty());
    assert_eq!(
        warnings(&problems),
        [
            "warning: test.yaml:1: kind Deployment (apps/v1) ignored: Switchyard does not use it",
            "warning: test.yaml:4: kind Gateway (gateway.networking.k8s.io/v1) ignored: Switchyard does not use it",
        ]
    );
}

#[test]
fn deprecated_fields_are_accepted_with_a_warning() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {fixedDelay: 2s, percent: 50}
      abort: {httpStatus: 503, percent: 10}
    mirror: {host: ratings, subset: v2, port: {number: 9080}}
    mirrorPercent: 25
    route:
    - destination: {host: ratings, subset: v1, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 5}
  subsets: [{name: v1}, {name: v2}]
"#,
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let warnings = warnings(&problems);
    assert!(warnings.contains(&"warning: test.yaml:8: VirtualService default/ratings: spec.http[0].fault.delay.percent: percent is deprecated: use percentage.value".to_string()), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("spec.http[0].fault.abort.percent: percent is deprecated")));
    assert!(warnings.iter().any(|w| w.contains(":11:") && w.contains("mirrorPercent is deprecated")));
    assert!(warnings.iter().any(|w| w.contains(":21:")
        && w.contains("spec.trafficPolicy.outlierDetection.consecutiveErrors: consecutiveErrors is deprecated")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("spec.trafficPolicy: trafficPolicy is not applied: it stays with Envoy's clusters")));

    let configs = render(&store, &workload("default", "app=productpage"));
    let fault = &configs["switchyard.fault"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(fault["delay"]["percentage"], 50.0);
    assert_eq!(fault["abort"]["percentage"], 10.0);
    assert_eq!(configs["switchyard.mirror"]["virtual_hosts"][0]["routes"][0]["mirrors"][0]["percentage"], 25.0);
}

#[test]
fn unapplied_and_unknown_fields_are_named_in_warnings() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{statPrefix: r}]
    retries: {attempts: 2, retryRemoteLocalities: true}
    rout: oops
    route:
    - destination: {host: reviews, port: {number: 9080}}
  - directResponse: {status: 200}
"#,
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let w = warnings(&problems);
    let expect = [
        "test.yaml:7: VirtualService default/reviews: spec.http[0].match[0].statPrefix: statPrefix is not applied",
        "test.yaml:8: VirtualService default/reviews: spec.http[0].retries.retryRemoteLocalities: retryRemoteLocalities is not applied",
        "test.yaml:9: VirtualService default/reviews: spec.http[0].rout: unknown field `rout` is ignored",
    ];
    for e in expect {
        assert!(w.iter().any(|w| w.contains(e)), "missing {e:?} in {w:#?}");
    }
    // directResponse is applied (issue 13): both rules are rendered.
    assert!(!w.iter().any(|w| w.contains("directResponse")), "{w:#?}");
    let configs = render(&store, &workload("default", "app=x"));
    assert_eq!(configs["switchyard.routing"]["virtual_hosts"][0]["routes"].as_array().unwrap().len(), 2);
}

#[test]
fn a_fault_without_percentage_applies_to_no_request_as_in_istio() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {grpcStatus: UNAVAILABLE}
    route:
    - destination: {host: ratings, port: {number: 9080}}
"#,
    );
    assert!(errors(&problems).is_empty());
    assert_eq!(
        warnings(&problems),
        ["warning: test.yaml:8: VirtualService default/ratings: spec.http[0].fault.abort: no percentage: as in Istio, this abort applies to 0% of requests (set percentage.value, e.g. 100)"]
    );
    let configs = render(&store, &workload("default", ""));
    let abort = &configs["switchyard.fault"]["virtual_hosts"][0]["routes"][0]["abort"];
    assert_eq!(abort["grpc_status"], 14);
    assert_eq!(abort["percentage"], 0.0);
}

#[test]
fn errors_name_file_line_document_and_field() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          regex: "("
    route:
    - destination: {host: reviews, port: {number: 9080}}
  - route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 40
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 50
  - timeout: 100us
    route:
    - destination: {host: reviews, port: {number: 9080}}
  - route:
    - destination: {host: reviews, port: {number: 9080}}
      weight: abc
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  subsets: [{name: v1}]
"#,
    );
    // A document with errors is not in force; the valid ones are.
    assert!(store.documents().is_empty(), "{:?}", store.documents());
    let errors = errors(&problems);
    // The filter's validation stops at the first error of a config, so the
    // VirtualService shows its first compile error plus every decode error.
    assert!(
        errors.iter().any(|e| e.starts_with(
            "test.yaml:25: VirtualService shop/reviews: spec.http[3].route[0].weight: expected an integer"
        )),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("test.yaml:30: DestinationRule default/ratings: spec.host: host is required")),
        "{errors:#?}"
    );
    // A document with decode errors is still checked for references: its
    // unknown subsets show in the same pass.
    assert!(errors.iter().any(|e| e.contains("subset \"v2\" of reviews.shop.svc.cluster.local")), "{errors:#?}");
    assert_eq!(errors.len(), 4, "{errors:#?}");

    // Fixed weight type: now the compile errors show, one per filter config, with lines.
    let fixed = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          regex: "("
    route:
    - destination: {host: reviews, port: {number: 9080}}
"#;
    let (_, problems) = load_one(fixed);
    let errors = config_common::errors(&problems);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("test.yaml:10: VirtualService default/reviews: spec.http[0].match[0].headers[\"end-user\"].regex: invalid regex"), "{errors:#?}");

    let weights = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - {destination: {host: r, port: {number: 1}}, weight: 0}\n    - {destination: {host: r, port: {number: 2}}}\n";
    let (_, problems) = load_one(weights);
    assert_eq!(
        config_common::errors(&problems),
        ["test.yaml:7: VirtualService default/r: spec.http[0].route: every destination has weight 0 (or none): give at least one a weight above 0 (Istio refuses a total of 0)"]
    );

    let timeout = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - {destination: {host: r, port: {number: 1}}}\n    timeout: 100us\n";
    let (_, problems) = load_one(timeout);
    assert_eq!(
        config_common::errors(&problems),
        ["test.yaml:9: VirtualService default/r: spec.http[0].timeout: duration \"100us\" must be at least 1ms"]
    );
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let (store, problems) = load_one("apiVersion: v1\nkind: Service\nmetadata: {name: a\nspec: {}\n");
    assert!(store.documents().is_empty());
    let errors = errors(&problems);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("test.yaml:4: YAML syntax error"), "{errors:?}");
}

#[test]
fn missing_kind_name_and_wrong_shapes_are_errors() {
    let (_, problems) = load_one(
        "apiVersion: v1\nmetadata: {name: a}\n---\n- a\n- b\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n",
    );
    let errors = errors(&problems);
    assert_eq!(
        errors,
        [
            "test.yaml:1: kind: kind is required",
            "test.yaml:4: expected a mapping, found a list",
            "test.yaml:9: Service: metadata: metadata.name is required",
        ]
    );
}

#[test]
fn duplicate_documents_are_errors_and_the_first_wins() {
    let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";
    let (store, problems) = load_one(&format!("{doc}---\n{doc}"));
    assert_eq!(store.documents().len(), 1);
    assert_eq!(
        errors(&problems),
        ["test.yaml:8: Service default/a: metadata.name: defined twice in this file, here and at line 3 (Kubernetes holds one object per kind, namespace and name): the one at line 3 is used until one of them is removed"]
    );
}

#[test]
fn no_input_makes_loading_or_rendering_panic() {
    let text = [
        "services.yaml",
        "destination-rule-all.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "virtual-service-httpbin-mirror.yaml",
        "bookinfo-gateway.yaml",
        "traffic-policy-reviews-sticky.yaml",
        "sidecar-registry-only.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(config_common::bookinfo_dir().join(f)).unwrap())
    .collect::<Vec<_>>()
    .join("---\n");
    let workloads = [workload("default", "app=productpage"), workload("istio-system", "istio=ingressgateway")];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.yaml");
    // Every prefix of the file, and every line replaced by junk of a few kinds.
    let mut inputs: Vec<String> = (0..text.len()).step_by(11).filter_map(|n| text.get(..n).map(String::from)).collect();
    let lines: Vec<&str> = text.lines().collect();
    for (i, _) in lines.iter().enumerate() {
        for junk in ["  - [", "weight: -1", "a: &x [*x]", "\t", "port: {number: 0}", "hosts: 7", "- {}"] {
            let mut changed = lines.clone();
            changed[i] = junk;
            inputs.push(changed.join("\n"));
        }
    }
    for input in inputs {
        std::fs::write(&path, &input).unwrap();
        let (store, _) = xds_ext::config::ConfigStore::load_paths(std::slice::from_ref(&path));
        for w in &workloads {
            if let Ok(configs) = store.render_configs(w) {
                let rendered = configs.to_rendered().unwrap();
                let routing = &rendered.resources["switchyard.routing"];
                assert!(switchyard_policy::routing::CompiledRouting::from_json(routing.as_bytes()).is_ok());
            }
        }
    }
}

#[test]
fn a_mesh_virtual_service_for_every_host_is_refused_as_in_istio() {
    let (store, problems) = load_one(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: all}\nspec:\n  hosts: [\"*\"]\n  http: [{route: [{destination: {host: a, port: {number: 80}}}]}]\n",
    );
    assert!(store.documents().is_empty());
    assert_eq!(
        errors(&problems),
        ["test.yaml:4: VirtualService default/all: spec.hosts[0]: host \"*\" is not allowed for the mesh (Istio refuses it): name the hosts"]
    );
}

#[test]
fn a_kind_list_is_read_item_by_item_with_their_own_lines() {
    let (store, problems) = load_one(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec: {ports: [{port: 80, name: http}]}\n- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {name: a}\n  spec:\n    hosts: [a]\n    http: [{timeout: soon, route: [{destination: {host: a}}]}]\n",
    );
    assert_eq!(store.documents().len(), 1, "the Service; the VirtualService has an error");
    assert_eq!(
        errors(&problems),
        ["test.yaml:13: VirtualService default/a: spec.http[0].timeout: invalid duration \"soon\""]
    );
}

#[test]
fn export_to_is_checked_as_istio_does() {
    let vs = |export: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a}}\nspec:\n  hosts: [a.example.com]\n  exportTo: {export}\n  http: [{{route: [{{destination: {{host: a.example.com, port: {{number: 80}}}}}}]}}]\n")
    };
    for (export, message) in [
        ("[\"~\"]", "allowed only on a ServiceEntry"),
        ("[\"*\", \".\"]", "cannot be combined"),
        ("[\".\", \".\"]", "duplicate entry"),
        ("[\"Not_A_Namespace\"]", "is not \".\", \"*\" or a namespace name"),
    ] {
        let (_, problems) = load_one(&vs(export));
        let errors = errors(&problems);
        assert!(errors.len() == 1 && errors[0].contains(message), "{export}: {errors:#?}");
    }
    for export in ["[\".\"]", "[\"*\"]", "[\"shop\", \"default\"]"] {
        let (_, problems) = load_one(&vs(export));
        assert!(errors(&problems).is_empty(), "{export}: {problems:#?}");
    }
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts: [e.example.com]\n  exportTo: [\"~\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n";
    assert!(errors(&load_one(se).1).is_empty(), "~ is fine on a ServiceEntry");
}

#[test]
fn a_virtual_service_bound_to_a_missing_gateway_is_a_warning() {
    let (_, problems) = load_one(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com]\n  gateways: [mesh, public]\n  http: [{route: [{destination: {host: a.example.com, port: {number: 80}}}]}]\n",
    );
    let warnings: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["warning: test.yaml:6: VirtualService default/a: spec.gateways[1]: Gateway default/public is not defined in these documents: what is bound to it applies nowhere"]
    );
}

#[test]
fn fields_whose_absence_would_change_routing_are_refused_not_warned() {
    let (_, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  tcp: [{route: [{destination: {host: reviews}}]}]
  tls: [{match: [{sniHosts: [reviews]}], route: [{destination: {host: reviews}}]}]
  http:
  - corsPolicy: {allowOrigins: [{exact: "*"}]}
    route:
    - destination: {host: reviews, port: {number: 9080}}
"#,
    );
    let errors = errors(&problems);
    for e in [
        "test.yaml:6: VirtualService default/reviews: spec.tcp: tcp is not supported: Switchyard routes HTTP only",
        "test.yaml:7: VirtualService default/reviews: spec.tls: tls is not supported: Switchyard routes HTTP only",
        "test.yaml:9: VirtualService default/reviews: spec.http[0].corsPolicy: corsPolicy is not supported",
    ] {
        assert!(errors.iter().any(|x| x.starts_with(e)), "missing {e:?} in {errors:#?}");
    }
}

#[test]
fn a_fault_on_a_rule_the_routing_filter_answers_is_refused() {
    let (_, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  http:
  - match: [{uri: {exact: /healthz}}]
    directResponse: {status: 200, body: {string: ok}}
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
"#,
    );
    let errors = errors(&problems);
    assert!(
        errors.len() == 1 && errors[0].starts_with("test.yaml:7: VirtualService default/web: spec.http[0].fault: a fault on a redirect or directResponse rule is not supported"),
        "{errors:#?}"
    );
}
