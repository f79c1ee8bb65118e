// Original file: proto/expert.proto


export interface ExpertId {
  'layer'?: (number);
  'expert'?: (number);
}

export interface ExpertId__Output {
  'layer': (number);
  'expert': (number);
}
