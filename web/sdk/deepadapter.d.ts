// Types of the DeepAdapter browser SDK (deepadapter.js).
export type ErrorCode = 'edge-unreachable' | 'edge-error' | 'hash-mismatch' | 'wasm-unavailable' | 'bad-input' | 'insecure-context';
export class DeepAdapterError extends Error {
  code: ErrorCode;
}
export interface Options {
  budgetMs?: number;        // latency budget per inference (50)
  inferences?: number;      // expected inferences per model download (100)
  runtime?: 'deepadapter' | 'ort';  // the page's runtime: DeepAdapter's WebAssembly one (default) or onnxruntime-web
  ort?: unknown;            // an onnxruntime-web module (implies runtime 'ort'; default: the edge's copy)
  progressive?: boolean;    // first visit: answer from the smallest branch while the match downloads (true)
  rememberMs?: number;      // a measured context (and, apart from it, the device's measurement) is reused by visits within this time (86400000; 0: never)
  rematchEveryMs?: number;  // also re-measure the network every N ms (0: only on a connection change or an edge answer far from the prediction)
  margin?: number;          // relative network change that triggers a new match (0.3)
  probeBytes?: number;      // largest bandwidth probe (131072)
  timeoutMs?: number;       // per request to the edge (10000)
  threshold?: number;       // overrides the model's confidence threshold (> 1: always the edge)
}
export interface Context { slowdown: number; downlink_kbps: number; rtt_ms: number; measured_ms: number; groups_ms: number[]; reference_model: string; hint: object | null }
export interface Match {
  model: string; url: string; bytes: number; sha256: string; val_accuracy: number;
  threshold: number;  // the collaborative rule's for this context: below this confidence the edge answers
  expected: { accuracy: number; offload: number; latency_ms: number };  // what the rule expects (validation)
  spec: { family: string; stages: number[][]; input: [number, number, number]; classes: number; hidden?: number };
  predicted: { latency_ms: number; download_ms: number; compute_ms: number; energy_mj: number };
  context: { device: string; network: string };  // the nearest device class and network preset
  meets_budget: boolean; ideal: string; ideal_cached: boolean; cached: boolean; degraded: boolean; load_ms?: number;
}
export interface Result {
  label: number; probabilities: Float32Array; ranOn: 'device' | 'edge'; confident: boolean;
  model: string; provisional: boolean; threshold: number; deviceLabel?: number; edgeError?: string;
  times: { inferenceMs: number; edgeMs?: number; totalMs?: number };
}
export type Event = { type: 'ready'; match: Match; timings: Timings } | { type: 'upgrade-failed'; error: Error }
  | { type: 'rematch'; context: Context; match: Match; swapped: boolean } | { type: 'edge-down' } | { type: 'edge-up' };
export interface Timings { runtime?: number; firstModel?: number; matched?: number }  // ms after connect()
export class DeepAdapter {
  static connect(edgeUrl: string, options?: Options): Promise<DeepAdapter>;
  readonly edge: string;
  options: Required<Omit<Options, 'ort' | 'threshold'>> & Pick<Options, 'ort' | 'threshold'>;
  context: Context | null;  // null until measured (progressive start)
  match: Match | null;      // null until matched
  readonly ready: Promise<void>;  // the matched model answers
  readonly runtime: 'deepadapter-wasm' | 'onnxruntime-web';
  timings: Timings;
  edgeReachable: boolean;
  readonly inputShape: [number, number, number];
  on(fn: (e: Event) => void): () => void;
  measureNetwork(): Promise<Pick<Context, 'downlink_kbps' | 'rtt_ms' | 'hint'>>;
  measureDevice(): Promise<Pick<Context, 'slowdown' | 'measured_ms' | 'groups_ms' | 'reference_model'>>;
  measure(): Promise<Context>;
  classify(input: ImageData | HTMLCanvasElement | Float32Array): Promise<Result>;
  setBudget(ms: number): Promise<Match>;
  rematchIfMoved(): Promise<boolean>;
  close(): Promise<void>;
}
